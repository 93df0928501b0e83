#pragma once
// Dynamic request batching for one model (the book's chapter 15 idea, in C++):
// a bounded queue; N workers (one per model instance) each take as many queued
// requests as fit in max_batch_size, concatenate them along dim 0, run once
// and hand every caller its own rows back, in order.
//
// Low load pays no batching tax: with max_queue_delay = 0, a run() that finds
// the queue empty and an instance free executes on the caller's own thread (no
// hand-off to a worker and back); otherwise a free worker runs whatever is
// queued at once, and batches grow by themselves while instances are busy. A
// server's I/O thread submits the requests it read together as one group, which
// a small idle model runs on that thread as one batch.
#include <torch/types.h>

#include <chrono>
#include <condition_variable>
#include <atomic>
#include <deque>
#include <exception>
#include <memory>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "torchship/errors.h"
#include "torchship/stats.h"

namespace torchship {

struct BatcherOptions {
  int64_t max_batch_size = 1;
  std::chrono::microseconds max_queue_delay{0};
  int64_t max_queue_size = 128;
  int num_workers = 1;
  // Let an idle model run a request on the caller's thread (see above). Off for models whose
  // kernels are multi-threaded: each caller thread would start its own OpenMP team (measured:
  // ResNet-18 at 4 connections 28 vs 35-38 req/s); those stay on the worker's warm team.
  bool run_on_caller = true;
  // The same for submit() (servers), where the caller is an I/O thread: only for models whose batch-1
  // call is a few microseconds (Model measures it at warm-up), so handing the request to a worker and
  // back would cost more than the call (docs/benchmarks.md: the MLP at 1-4 connections).
  bool run_small_on_caller = false;
};

class DynamicBatcher {
 public:
  using Tensors = std::vector<torch::Tensor>;
  // Runs one batch on worker `worker` (its model instance): on that worker's thread, or on a
  // caller's thread when an idle model runs a request at once (BatcherOptions::run_on_caller).
  using RunFn = std::function<Tensors(int worker, const Tensors& batch)>;
  // Joins input `input` of several requests along dim 0 for `worker` (default torch::cat). A CUDA
  // instance concatenates straight into its pinned staging buffer, saving a copy of every batch.
  using ConcatFn = std::function<torch::Tensor(int worker, size_t input, const Tensors& parts)>;
  // Called exactly once per submitted request, on a worker's thread: the outputs, or the error.
  using Done = std::function<void(std::exception_ptr error, Tensors outputs)>;
  // Set by the caller when nobody waits for the answer any more (its client hung up): a request
  // still queued is dropped before it runs, and its Done gets CancelledError.
  using CancelFlag = std::shared_ptr<const std::atomic<bool>>;

  DynamicBatcher(BatcherOptions options, RunFn run, ModelStats& stats, ConcatFn concat = {});
  ~DynamicBatcher();  // shutdown()
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Queues a validated request (every tensor's dim 0 is its batch size).
  // Throws OverloadedError when the queue is full, UnavailableError after shutdown.
  std::future<Tensors> submit(Tensors inputs, std::optional<std::chrono::steady_clock::time_point> deadline = {});

  // Asynchronous form: never runs the model on the caller's thread. `done` runs on a worker.
  void submit(Tensors inputs, std::optional<std::chrono::steady_clock::time_point> deadline, Done done,
              CancelFlag cancelled = {});

  // One request of a group submit().
  struct Submission {
    Tensors inputs;
    std::optional<std::chrono::steady_clock::time_point> deadline;
    Done done;
    CancelFlag cancelled;
  };
  // Several requests at once, in order (a server's I/O thread passes on what it read in one round): like the
  // asynchronous submit() of each, except that when the model is idle and small (run_small_on_caller) they run
  // here together, as one batch. Never throws: a request refused (queue full, shutting down) gets its error
  // through its `done`, on this thread.
  void submit(std::vector<Submission> group);

  // Throws the OverloadedError submit() would throw now. Lets a caller refuse a
  // request before decoding it; advisory (the queue may drain or fill meanwhile).
  void check_capacity() const;

  // Runs a request: on the caller's thread when the model is idle (run_on_caller), else queued and
  // waited for. Throws like submit(), and TimeoutError past the deadline.
  Tensors run(Tensors inputs, std::optional<std::chrono::microseconds> timeout = {});

  // Stops accepting, finishes everything queued and in flight, joins the workers. Idempotent.
  void shutdown();

 private:
  struct Request {
    Tensors inputs;
    int64_t rows = 0;
    std::chrono::steady_clock::time_point enqueued;
    std::optional<std::chrono::steady_clock::time_point> deadline;
    Done done;
    CancelFlag cancelled;
  };

  // A request running on its caller's thread on `instance`: claimed in run(), freed (and a
  // waiting worker or shutdown woken) when this goes out of scope.
  class CallerRun {
   public:
    CallerRun(DynamicBatcher& batcher, int instance) : batcher_(batcher), instance_(instance) {}
    ~CallerRun();
    CallerRun(const CallerRun&) = delete;
    CallerRun& operator=(const CallerRun&) = delete;

   private:
    DynamicBatcher& batcher_;
    int instance_;
  };

  static Request make_request(Tensors inputs, std::optional<std::chrono::steady_clock::time_point> deadline,
                              Done done);
  void queue_request(Request request);  // takes the lock; throws when stopping or full
  void worker_loop(int worker);
  int claim_free_instance();  // under mutex_; -1 when every instance is busy
  // submit()'s caller runs `batch`, then what queued behind it, on `instance` (claimed for it).
  void run_here(int instance, std::vector<Request> batch);
  static constexpr int kCallerBatches = 4;  // submit()'s caller runs at most this many batches, then hands over
  OverloadedError queue_full(int64_t depth) const;
  void enqueue(Request request);  // under mutex_; throws OverloadedError when full
  std::vector<Request> take_batch(std::unique_lock<std::mutex>& lock);
  void execute(int worker, std::vector<Request>& batch);

  const BatcherOptions options_;
  const RunFn run_;
  const ConcatFn concat_;
  ModelStats& stats_;

  std::mutex shutdown_mutex_;  // serialises shutdown() callers
  std::mutex mutex_;
  std::condition_variable work_available_;
  std::deque<Request> queue_;
  int64_t queued_rows_ = 0;
  bool stopping_ = false;
  std::vector<char> instance_busy_;  // instance i runs a batch (its worker's or a caller's)
  int callers_running_ = 0;          // run() calls executing on their own thread
  std::condition_variable callers_done_;  // notified when the last of them finishes after stopping_
  std::vector<std::thread> workers_;
};

}  // namespace torchship

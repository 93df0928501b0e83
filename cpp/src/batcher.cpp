#include "torchship/batcher.h"

#include <torch/torch.h>

#include <algorithm>

#include "torchship/errors.h"

namespace torchship {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Requests can share a batch only when every input agrees beyond dim 0.
bool same_item_shapes(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].sizes().slice(1) != b[i].sizes().slice(1)) return false;
  }
  return true;
}

}  // namespace

DynamicBatcher::DynamicBatcher(BatcherOptions options, RunFn run, ModelStats& stats, ConcatFn concat)
    : options_(options),
      run_(std::move(run)),
      concat_(std::move(concat)),
      stats_(stats),
      instance_busy_(static_cast<size_t>(options.num_workers)) {
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

DynamicBatcher::~DynamicBatcher() { shutdown(); }

DynamicBatcher::Request DynamicBatcher::make_request(Tensors inputs, std::optional<Clock::time_point> deadline,
                                                     Done done) {
  Request request;
  request.rows = inputs.empty() ? 0 : inputs.front().size(0);
  request.inputs = std::move(inputs);
  request.enqueued = Clock::now();
  request.deadline = deadline;
  request.done = std::move(done);
  return request;
}

namespace {
// A Done that fulfils a promise: the blocking forms wait on its future.
std::pair<DynamicBatcher::Done, std::future<DynamicBatcher::Tensors>> promised() {
  auto promise = std::make_shared<std::promise<DynamicBatcher::Tensors>>();
  auto future = promise->get_future();
  return {[promise](std::exception_ptr error, DynamicBatcher::Tensors outputs) {
            if (error) {
              promise->set_exception(error);
            } else {
              promise->set_value(std::move(outputs));
            }
          },
          std::move(future)};
}
}  // namespace

void DynamicBatcher::enqueue(Request request) {
  const auto depth = static_cast<int64_t>(queue_.size());
  if (depth >= options_.max_queue_size) throw queue_full(depth);
  queued_rows_ += request.rows;
  queue_.push_back(std::move(request));
  stats_.queue_depth.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
}

void DynamicBatcher::queue_request(Request request) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw UnavailableError("model is shutting down and accepts no new requests");
    enqueue(std::move(request));
  }
  work_available_.notify_one();
}

std::future<DynamicBatcher::Tensors> DynamicBatcher::submit(Tensors inputs,
                                                              std::optional<Clock::time_point> deadline) {
  auto [done, future] = promised();
  queue_request(make_request(std::move(inputs), deadline, std::move(done)));
  return std::move(future);
}

void DynamicBatcher::submit(Tensors inputs, std::optional<Clock::time_point> deadline, Done done,
                            CancelFlag cancelled) {
  Request request = make_request(std::move(inputs), deadline, std::move(done));
  request.cancelled = std::move(cancelled);
  if (!options_.run_small_on_caller || options_.max_queue_delay.count() > 0) {
    queue_request(std::move(request));
    return;
  }
  std::vector<Request> batch;
  int instance = -1;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw UnavailableError("model is shutting down and accepts no new requests");
    // Idle model: run here (nobody is queued ahead, so order is kept); `done` runs on this thread.
    if (queue_.empty()) instance = claim_free_instance();
    if (instance < 0) {
      enqueue(std::move(request));
      // Every instance busy: whoever holds one looks at the queue when it is done, so no wake-up
      // (a worker woken now would find its instance taken and sleep again).
      if (std::find(instance_busy_.begin(), instance_busy_.end(), 0) == instance_busy_.end()) return;
    } else {
      ++callers_running_;
      batch.push_back(std::move(request));
    }
  }
  if (instance < 0) {
    work_available_.notify_one();
    return;
  }
  run_here(instance, std::move(batch));
}

void DynamicBatcher::submit(std::vector<Submission> group) {
  const bool on_caller = options_.run_small_on_caller && options_.max_queue_delay.count() == 0;
  std::vector<Submission> refused;
  bool stopping = false;
  bool queued = false;
  bool wake = false;
  int instance = -1;
  std::vector<Request> batch;
  {
    std::unique_lock lock(mutex_);
    stopping = stopping_;
    const bool idle = queue_.empty();
    for (auto& s : group) {
      if (stopping || static_cast<int64_t>(queue_.size()) >= options_.max_queue_size) {
        refused.push_back(std::move(s));
        continue;
      }
      Request request = make_request(std::move(s.inputs), s.deadline, std::move(s.done));
      request.cancelled = std::move(s.cancelled);
      enqueue(std::move(request));
      queued = true;
    }
    // Idle model: the group runs here, first in the queue, so order is kept.
    if (queued && on_caller && idle) instance = claim_free_instance();
    if (instance >= 0) {
      ++callers_running_;
      batch = take_batch(lock);
      stats_.queue_depth.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
    }
    // What this thread does not run: a free instance's worker takes it.
    wake = !queue_.empty() && std::find(instance_busy_.begin(), instance_busy_.end(), 0) != instance_busy_.end();
  }
  for (auto& s : refused) {
    s.done(stopping ? std::make_exception_ptr(UnavailableError("model is shutting down and accepts no new requests"))
                    : std::make_exception_ptr(queue_full(options_.max_queue_size)),
           {});
  }
  if (wake) work_available_.notify_one();
  if (instance >= 0) run_here(instance, std::move(batch));
}

void DynamicBatcher::run_here(int instance, std::vector<Request> batch) {
  const CallerRun free_instance(*this, instance);  // frees the instance even if execute() throws
  // What queued behind this call runs here too, a few batches at most (this is an I/O thread): handing
  // it to the worker would cost a wake-up and a context switch per batch, more than the call.
  for (int round = 1;; ++round) {
    execute(instance, batch);
    if (round == kCallerBatches) break;
    std::unique_lock lock(mutex_);
    batch = take_batch(lock);
    stats_.queue_depth.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
    if (batch.empty()) break;
  }
}

void DynamicBatcher::check_capacity() const {
  // The depth every queue change publishes, read without the lock the workers contend on: advisory anyway.
  const int64_t depth = stats_.queue_depth.load(std::memory_order_relaxed);
  if (depth >= options_.max_queue_size) throw queue_full(depth);
}

OverloadedError DynamicBatcher::queue_full(int64_t depth) const {
  return OverloadedError("request queue is full (" + std::to_string(depth) + " waiting, max_queue_size " +
                        std::to_string(options_.max_queue_size) + "); retry later");
}

int DynamicBatcher::claim_free_instance() {
  for (size_t i = 0; i < instance_busy_.size(); ++i) {
    if (!instance_busy_[i]) {
      instance_busy_[i] = 1;
      return static_cast<int>(i);
    }
  }
  return -1;
}

DynamicBatcher::Tensors DynamicBatcher::run(Tensors inputs, std::optional<std::chrono::microseconds> timeout) {
  std::optional<Clock::time_point> deadline;
  if (timeout) deadline = Clock::now() + *timeout;
  auto [done, future] = promised();
  std::vector<Request> batch;
  batch.push_back(make_request(std::move(inputs), deadline, std::move(done)));
  int instance = -1;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw UnavailableError("model is shutting down and accepts no new requests");
    // Idle model: run on this thread (nobody is queued ahead, so order is kept).
    const bool on_caller = options_.run_on_caller && options_.max_queue_delay.count() == 0 && queue_.empty();
    instance = on_caller ? claim_free_instance() : -1;
    if (instance >= 0) {
      ++callers_running_;
    } else {
      enqueue(std::move(batch[0]));
    }
  }
  if (instance < 0) {
    work_available_.notify_one();
    if (deadline && future.wait_until(*deadline) == std::future_status::timeout) {
      throw TimeoutError("request timed out after " + std::to_string(timeout->count()) + " us");
    }
    return future.get();
  }
  {
    const CallerRun done(*this, instance);  // frees the instance even if execute() throws
    execute(instance, batch);
  }
  return future.get();
}

DynamicBatcher::CallerRun::~CallerRun() {
  bool wake_worker = false;
  bool wake_shutdown = false;
  {
    std::lock_guard lock(batcher_.mutex_);
    batcher_.instance_busy_[static_cast<size_t>(instance_)] = 0;
    --batcher_.callers_running_;
    wake_worker = !batcher_.queue_.empty();  // its worker may be waiting for this instance
    wake_shutdown = batcher_.stopping_ && batcher_.callers_running_ == 0;
  }
  if (wake_worker) batcher_.work_available_.notify_all();
  if (wake_shutdown) batcher_.callers_done_.notify_all();
}

void DynamicBatcher::shutdown() {
  std::lock_guard join_lock(shutdown_mutex_);
  {
    std::unique_lock lock(mutex_);
    stopping_ = true;
    callers_done_.wait(lock, [&] { return callers_running_ == 0; });
  }
  work_available_.notify_all();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

void DynamicBatcher::worker_loop(int worker) {
  const auto mine = static_cast<size_t>(worker);
  bool ran = false;
  while (true) {
    std::vector<Request> batch;
    {
      std::unique_lock lock(mutex_);
      // Freed under the lock the loop takes anyway: only this worker waits for its own instance
      // (callers that find it busy queue instead).
      if (ran) instance_busy_[mine] = 0;
      ran = false;
      work_available_.wait(lock, [&] { return (stopping_ && queue_.empty()) || (!queue_.empty() && !instance_busy_[mine]); });
      if (queue_.empty()) return;  // stopping, and everything queued has been taken
      if (options_.max_queue_delay.count() > 0 && !stopping_ && queued_rows_ < options_.max_batch_size) {
        // Give the batch a little time to fill, counted from the oldest request's arrival.
        const auto until = queue_.front().enqueued + options_.max_queue_delay;
        work_available_.wait_until(lock, until, [&] {
          return stopping_ || queue_.empty() || queued_rows_ >= options_.max_batch_size;
        });
        if (queue_.empty() || instance_busy_[mine]) continue;  // taken meanwhile
      }
      batch = take_batch(lock);
      instance_busy_[mine] = 1;
      stats_.queue_depth.store(static_cast<int64_t>(queue_.size()), std::memory_order_relaxed);
      if (!queue_.empty()) work_available_.notify_one();
    }
    execute(worker, batch);
    ran = true;
  }
}

std::vector<DynamicBatcher::Request> DynamicBatcher::take_batch(std::unique_lock<std::mutex>&) {
  std::vector<Request> batch;
  int64_t rows = 0;
  const auto now = Clock::now();
  for (auto it = queue_.begin(); it != queue_.end();) {
    const bool expired = it->deadline && *it->deadline < now;
    if (expired || (it->cancelled && it->cancelled->load(std::memory_order_relaxed))) {
      // Answered under the lock: Done only hands the error on (a promise, or a post to a connection).
      it->done(expired ? std::make_exception_ptr(TimeoutError("request timed out while queued"))
                       : std::make_exception_ptr(CancelledError("request withdrawn before it ran")),
               {});
      if (!expired) stats_.cancelled.fetch_add(1, std::memory_order_relaxed);
      queued_rows_ -= it->rows;
      it = queue_.erase(it);
      continue;
    }
    if (!batch.empty()) {
      if (rows + it->rows > options_.max_batch_size) break;  // first-come first-served: stop at the first misfit
      if (!same_item_shapes(batch.front().inputs, it->inputs)) {
        ++it;  // a different image size, say: it goes in a later batch
        continue;
      }
    }
    rows += it->rows;
    queued_rows_ -= it->rows;
    batch.push_back(std::move(*it));
    it = queue_.erase(it);
  }
  return batch;
}

void DynamicBatcher::execute(int worker, std::vector<Request>& batch) {
  if (batch.empty()) return;
  const auto start = Clock::now();
  for (const auto& r : batch) stats_.queue_seconds.observe(seconds_between(r.enqueued, start));
  std::vector<Tensors> results(batch.size());
  try {
    int64_t total_rows = 0;
    for (const auto& r : batch) total_rows += r.rows;
    Tensors inputs;
    if (batch.size() == 1) {
      inputs = std::move(batch.front().inputs);
    } else {
      for (size_t i = 0; i < batch.front().inputs.size(); ++i) {
        std::vector<torch::Tensor> parts;
        parts.reserve(batch.size());
        for (const auto& r : batch) parts.push_back(r.inputs[i]);
        inputs.push_back(concat_ ? concat_(worker, i, parts) : torch::cat(parts, 0));
      }
    }
    const auto gathered = Clock::now();
    stats_.gather_seconds.observe(seconds_between(start, gathered));
    const Tensors outputs = run_(worker, inputs);
    for (size_t k = 0; k < outputs.size(); ++k) {
      if (outputs[k].dim() == 0 || outputs[k].size(0) != total_rows) {
        throw Error("output " + std::to_string(k) + " has shape " + c10::str(outputs[k].sizes()) +
                    ", which does not start with the batch size " + std::to_string(total_rows));
      }
    }
    int64_t offset = 0;
    for (size_t j = 0; j < batch.size(); ++j) {
      for (const auto& out : outputs) results[j].push_back(out.narrow(0, offset, batch[j].rows));
      offset += batch[j].rows;
    }
    stats_.compute_seconds.observe(seconds_between(gathered, Clock::now()));
    stats_.batch_size.observe(static_cast<double>(total_rows));
    stats_.batches.fetch_add(1, std::memory_order_relaxed);
    stats_.last_inference_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count(),
                                   std::memory_order_relaxed);
  } catch (...) {
    const auto error = std::current_exception();
    for (auto& r : batch) r.done(error, {});
    return;
  }
  for (size_t j = 0; j < batch.size(); ++j) batch[j].done(nullptr, std::move(results[j]));
}

}  // namespace torchship

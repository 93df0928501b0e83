// Run: ctest --test-dir build/<tag> -R Batcher   (or: make test)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <thread>

#include "torchship/batcher.h"
#include "torchship/errors.h"

using namespace torchship;
using namespace std::chrono_literals;
using Tensors = DynamicBatcher::Tensors;

namespace {

// A stand-in model: y = 2x + worker, recording each batch's size. It can be
// held at a gate so tests control when a batch finishes.
struct FakeModel {
  std::mutex mutex;
  std::vector<int64_t> batch_sizes;
  std::atomic<bool> gate_open{true};
  std::atomic<int> running{0};

  Tensors operator()(int, const Tensors& batch) {
    running.fetch_add(1);
    while (!gate_open.load()) std::this_thread::sleep_for(100us);
    {
      std::lock_guard lock(mutex);
      batch_sizes.push_back(batch[0].size(0));
    }
    running.fetch_sub(1);
    return {batch[0] * 2};
  }
};

Tensors rows(std::initializer_list<float> values) {
  return {torch::tensor(std::vector<float>(values)).unsqueeze(1)};
}

BatcherOptions options(int64_t max_batch, int64_t max_queue = 64, std::chrono::microseconds delay = 0us,
                       int workers = 1) {
  return BatcherOptions{max_batch, delay, max_queue, workers};
}

void wait_until(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!condition()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "condition not reached in 5 s";
    std::this_thread::sleep_for(200us);
  }
}

}  // namespace

TEST(Batcher, ReturnsEachCallerItsOwnRowsInOrder) {
  FakeModel model;
  ModelStats stats(8);
  model.gate_open = false;
  DynamicBatcher batcher(options(8), std::ref(model), stats);
  auto blocker = batcher.submit(rows({100}));  // occupies the worker so the next requests queue up
  wait_until([&] { return model.running.load() == 1; });
  auto a = batcher.submit(rows({1, 2}));
  auto b = batcher.submit(rows({3}));
  auto c = batcher.submit(rows({4, 5, 6}));
  model.gate_open = true;
  EXPECT_TRUE(torch::equal(blocker.get()[0], rows({200})[0]));
  EXPECT_TRUE(torch::equal(a.get()[0], rows({2, 4})[0]));
  EXPECT_TRUE(torch::equal(b.get()[0], rows({6})[0]));
  EXPECT_TRUE(torch::equal(c.get()[0], rows({8, 10, 12})[0]));
  ASSERT_EQ(model.batch_sizes.size(), 2u);  // the three queued requests ran as one batch
  EXPECT_EQ(model.batch_sizes[1], 6);
}

TEST(Batcher, ConcatenatesThroughTheGivenFunctionIntoItsOutput) {
  FakeModel model;
  ModelStats stats(8);
  model.gate_open = false;
  std::vector<std::pair<int, size_t>> calls;  // (worker, input) per concatenation
  torch::Tensor buffer = torch::full({16, 1}, -1.0f);  // stands in for a pinned staging buffer
  auto concat = [&](int worker, size_t input, const Tensors& parts) {
    calls.emplace_back(worker, input);
    int64_t n = 0;
    for (const auto& p : parts) n += p.size(0);
    auto view = buffer.narrow(0, 0, n);
    return torch::cat_out(view, parts, 0);
  };
  DynamicBatcher batcher(options(8), std::ref(model), stats, concat);
  auto blocker = batcher.submit(rows({100}));  // alone: no concatenation
  wait_until([&] { return model.running.load() == 1; });
  auto a = batcher.submit(rows({1, 2}));
  auto b = batcher.submit(rows({3}));
  model.gate_open = true;
  EXPECT_TRUE(torch::equal(blocker.get()[0], rows({200})[0]));
  EXPECT_TRUE(torch::equal(a.get()[0], rows({2, 4})[0]));
  EXPECT_TRUE(torch::equal(b.get()[0], rows({6})[0]));
  EXPECT_EQ(calls, (std::vector<std::pair<int, size_t>>{{0, 0}}));
  EXPECT_TRUE(torch::equal(buffer.narrow(0, 0, 4), rows({1, 2, 3, -1})[0]));  // the batch was written in place
}

TEST(Batcher, NeverExceedsMaxBatchSize) {
  FakeModel model;
  ModelStats stats(4);
  model.gate_open = false;
  DynamicBatcher batcher(options(4), std::ref(model), stats);
  std::vector<std::future<Tensors>> futures;
  futures.push_back(batcher.submit(rows({0})));
  wait_until([&] { return model.running.load() == 1; });
  for (int i = 1; i <= 10; ++i) futures.push_back(batcher.submit(rows({static_cast<float>(i)})));
  model.gate_open = true;
  for (int i = 0; i <= 10; ++i) EXPECT_FLOAT_EQ(futures[i].get()[0].item<float>(), 2.0f * i);
  for (const auto size : model.batch_sizes) EXPECT_LE(size, 4);
  EXPECT_EQ(model.batch_sizes, (std::vector<int64_t>{1, 4, 4, 2}));
}

TEST(Batcher, RunsAtOnceWithoutDelayAndWaitsWithDelay) {
  FakeModel model;
  ModelStats stats(8);
  {
    DynamicBatcher batcher(options(8), std::ref(model), stats);
    const auto t0 = std::chrono::steady_clock::now();
    batcher.run(rows({1}));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 20ms);  // no batching tax at low load
  }
  {
    DynamicBatcher batcher(options(8, 64, 30ms), std::ref(model), stats);
    const auto t0 = std::chrono::steady_clock::now();
    auto a = batcher.submit(rows({1}));
    auto b = batcher.submit(rows({2}));
    a.get();
    b.get();
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 25ms);  // waited to fill the batch
    EXPECT_EQ(model.batch_sizes.back(), 2);
  }
}

TEST(Batcher, FullBatchDoesNotWaitForTheDelay) {
  FakeModel model;
  ModelStats stats(2);
  DynamicBatcher batcher(options(2, 64, 10s), std::ref(model), stats);
  const auto t0 = std::chrono::steady_clock::now();
  auto a = batcher.submit(rows({1}));
  auto b = batcher.submit(rows({2}));
  a.get();
  b.get();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(Batcher, RejectsWhenTheQueueIsFull) {
  FakeModel model;
  ModelStats stats(1);
  model.gate_open = false;
  DynamicBatcher batcher(options(1, 2), std::ref(model), stats);
  auto running = batcher.submit(rows({0}));
  wait_until([&] { return model.running.load() == 1; });
  EXPECT_NO_THROW(batcher.check_capacity());
  auto q1 = batcher.submit(rows({1}));
  auto q2 = batcher.submit(rows({2}));
  EXPECT_THROW(batcher.check_capacity(), OverloadedError);  // what a server asks before decoding a body
  EXPECT_THROW(batcher.submit(rows({3})), OverloadedError);
  model.gate_open = true;
  EXPECT_FLOAT_EQ(q2.get()[0].item<float>(), 4.0f);  // rejected work lost nothing already queued
  running.get();
  q1.get();
  EXPECT_NO_THROW(batcher.run(rows({5})));  // recovers once drained
  EXPECT_NO_THROW(batcher.check_capacity());
}

TEST(Batcher, TimesOutAQueuedRequest) {
  FakeModel model;
  ModelStats stats(1);
  model.gate_open = false;
  DynamicBatcher batcher(options(1), std::ref(model), stats);
  auto running = batcher.submit(rows({0}));
  wait_until([&] { return model.running.load() == 1; });
  EXPECT_THROW(batcher.run(rows({1}), 5ms), TimeoutError);
  auto late = batcher.submit(rows({2}), std::chrono::steady_clock::now() + 1ms);
  std::this_thread::sleep_for(5ms);
  model.gate_open = true;
  running.get();
  EXPECT_THROW(late.get(), TimeoutError);  // expired while queued: never run
}

TEST(Batcher, ShutdownDrainsQueuedWorkAndRefusesNewWork) {
  FakeModel model;
  ModelStats stats(1);
  model.gate_open = false;
  DynamicBatcher batcher(options(1), std::ref(model), stats);
  std::vector<std::future<Tensors>> futures;
  for (int i = 0; i < 5; ++i) futures.push_back(batcher.submit(rows({static_cast<float>(i)})));
  std::thread stopper([&] { batcher.shutdown(); });
  wait_until([&] {
    try {
      batcher.submit(rows({9}));
      return false;
    } catch (const UnavailableError&) {
      return true;
    }
  });
  model.gate_open = true;
  stopper.join();
  for (int i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(futures[i].get()[0].item<float>(), 2.0f * i);
}

TEST(Batcher, ConcurrentProducersEachGetTheirOwnAnswer) {
  FakeModel model;
  ModelStats stats(16);
  DynamicBatcher batcher(options(16, 1024, 200us, 2), std::ref(model), stats);
  std::atomic<int> wrong{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < 8; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < 200; ++i) {
        const float v = static_cast<float>(p * 1000 + i);
        const auto out = batcher.run(rows({v, v + 0.5f}));
        if (out[0][0].item<float>() != 2 * v || out[0][1].item<float>() != 2 * v + 1) wrong.fetch_add(1);
      }
    });
  }
  for (auto& t : producers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  int64_t total = 0;
  bool batched = false;
  for (const auto s : model.batch_sizes) {
    total += s;
    batched |= s > 2;
  }
  EXPECT_EQ(total, 8 * 200 * 2);
  EXPECT_TRUE(batched) << "8 concurrent producers never shared a batch";
}

TEST(Batcher, DifferentItemShapesGoInDifferentBatches) {
  FakeModel model;
  ModelStats stats(8);
  model.gate_open = false;
  DynamicBatcher batcher(options(8), std::ref(model), stats);
  auto blocker = batcher.submit(rows({0}));
  wait_until([&] { return model.running.load() == 1; });
  auto a = batcher.submit({torch::ones({1, 2})});
  auto b = batcher.submit({torch::ones({1, 3})});
  auto c = batcher.submit({torch::ones({2, 2})});
  model.gate_open = true;
  blocker.get();
  EXPECT_EQ(a.get()[0].sizes(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(b.get()[0].sizes(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(c.get()[0].sizes(), (std::vector<int64_t>{2, 2}));
}

TEST(Batcher, ModelErrorsReachEveryCallerOfTheBatch) {
  ModelStats stats(4);
  DynamicBatcher batcher(
      options(4), [](int, const Tensors&) -> Tensors { throw std::runtime_error("boom"); }, stats);
  EXPECT_THROW(batcher.run(rows({1})), std::runtime_error);
  EXPECT_NO_THROW(batcher.shutdown());
}

TEST(Batcher, IdleModelRunsOnTheCallersThreadAndBusyOneQueues) {
  ModelStats stats(4);
  std::mutex mutex;
  std::vector<std::thread::id> ran_on;
  std::atomic<bool> gate_open{true};
  DynamicBatcher batcher(
      options(4),
      [&](int, const Tensors& batch) -> Tensors {
        {
          std::lock_guard lock(mutex);
          ran_on.push_back(std::this_thread::get_id());
        }
        while (!gate_open.load()) std::this_thread::sleep_for(100us);
        return {batch[0] * 2};
      },
      stats);
  EXPECT_FLOAT_EQ(batcher.run(rows({3}))[0].item<float>(), 6.0f);
  ASSERT_EQ(ran_on.size(), 1u);
  EXPECT_EQ(ran_on[0], std::this_thread::get_id());  // no hand-off to a worker at low load

  gate_open = false;  // hold the only instance on another caller's thread...
  std::thread holder([&] { batcher.run(rows({1})); });
  wait_until([&] {
    std::lock_guard lock(mutex);
    return ran_on.size() == 2;
  });
  auto queued = batcher.submit(rows({5}));  // ...so this one must wait in the queue for it
  EXPECT_EQ(queued.wait_for(20ms), std::future_status::timeout);
  gate_open = true;
  holder.join();
  EXPECT_FLOAT_EQ(queued.get()[0].item<float>(), 10.0f);
  std::lock_guard lock(mutex);
  EXPECT_NE(ran_on[2], std::this_thread::get_id());  // the worker took it
}

// Servers' submit() with run_small_on_caller: an idle model runs on the submitting (I/O) thread, and
// what queued behind it meanwhile runs there too, in order, without waking the worker; a request
// withdrawn while queued is answered cancelled, never run.
TEST(Batcher, SmallModelRunsSubmitsOnTheCallerAndDrainsWhatQueuedBehind) {
  ModelStats stats(4);
  std::mutex mutex;
  std::vector<std::pair<std::thread::id, float>> ran;  // thread, first value of each batch
  std::atomic<bool> gate_open{false};
  auto opts = options(1);
  opts.run_small_on_caller = true;
  DynamicBatcher batcher(
      opts,
      [&](int, const Tensors& batch) -> Tensors {
        {
          std::lock_guard lock(mutex);
          ran.emplace_back(std::this_thread::get_id(), batch[0][0][0].item<float>());
        }
        while (!gate_open.load()) std::this_thread::sleep_for(100us);
        return {batch[0] * 2};
      },
      stats);
  std::vector<float> answers(4, 0.0f);
  std::atomic<int> answered{0};
  auto done_for = [&](size_t k) {
    return [&, k](std::exception_ptr error, Tensors outputs) {
      answers[k] = error ? -1.0f : outputs[0].item<float>();
      answered.fetch_add(1);
    };
  };
  std::thread::id io_thread;
  std::thread caller([&] {
    io_thread = std::this_thread::get_id();
    batcher.submit(rows({1}), std::nullopt, done_for(0));  // idle: runs here, held at the gate
  });
  wait_until([&] {
    std::lock_guard lock(mutex);
    return ran.size() == 1;
  });
  auto withdrawn = std::make_shared<std::atomic<bool>>(false);
  batcher.submit(rows({2}), std::nullopt, done_for(1));  // busy: queued behind it
  batcher.submit(rows({3}), std::nullopt, done_for(2), withdrawn);
  batcher.submit(rows({4}), std::nullopt, done_for(3));
  withdrawn->store(true);
  gate_open = true;
  caller.join();
  wait_until([&] { return answered.load() == 4; });
  EXPECT_EQ(answers, (std::vector<float>{2, 4, -1, 8}));
  std::lock_guard lock(mutex);
  ASSERT_EQ(ran.size(), 3u);  // the withdrawn request never ran
  for (const auto& [thread, value] : ran) EXPECT_EQ(thread, io_thread) << "batch starting " << value;
  EXPECT_EQ(ran[1].second, 2.0f);
  EXPECT_EQ(ran[2].second, 4.0f);
  EXPECT_EQ(stats.cancelled.load(), 1);
}

// A server's I/O thread submits what it read in one round as a group: an idle small model runs the
// group on that thread as one batch (up to max_batch_size rows; the rest in the next), each request
// gets its own rows, in order.
TEST(Batcher, SmallModelRunsAGroupOnTheCallerAsOneBatch) {
  ModelStats stats(4);
  std::vector<std::pair<std::thread::id, int64_t>> ran;  // thread, rows of each batch
  auto opts = options(3);
  opts.run_small_on_caller = true;
  DynamicBatcher batcher(
      opts,
      [&](int, const Tensors& batch) -> Tensors {
        ran.emplace_back(std::this_thread::get_id(), batch[0].size(0));
        return {batch[0] * 2};
      },
      stats);
  std::vector<float> answers(4, 0.0f);
  std::vector<std::thread::id> answered_on(4);
  std::vector<DynamicBatcher::Submission> group;
  for (size_t k = 0; k < 4; ++k) {
    auto done = [&, k](std::exception_ptr error, Tensors outputs) {
      answers[k] = error ? -1.0f : outputs[0].item<float>();
      answered_on[k] = std::this_thread::get_id();
    };
    group.push_back({rows({static_cast<float>(k + 1)}), std::nullopt, std::move(done), {}});
  }
  batcher.submit(std::move(group));  // returns once all four have run, here
  EXPECT_EQ(answers, (std::vector<float>{2, 4, 6, 8}));
  ASSERT_EQ(ran.size(), 2u);
  EXPECT_EQ(ran[0].second, 3);  // max_batch_size
  EXPECT_EQ(ran[1].second, 1);
  for (const auto& [thread, n] : ran) EXPECT_EQ(thread, std::this_thread::get_id());
  for (const auto& thread : answered_on) EXPECT_EQ(thread, std::this_thread::get_id());
}

// A group never throws: what the queue cannot take is refused through its own `done` (503's error),
// the rest is served; after shutdown every request is refused as unavailable.
TEST(Batcher, AGroupRefusesWhatDoesNotFitThroughEachDone) {
  FakeModel model;
  ModelStats stats(4);
  model.gate_open = false;
  DynamicBatcher batcher(options(1, /*max_queue=*/2), std::ref(model), stats);
  auto blocker = batcher.submit(rows({0}));  // the worker holds this one at the gate
  wait_until([&] { return model.running.load() == 1; });
  std::vector<std::string> outcome(4);
  std::atomic<int> answered{0};
  const auto group_of = [&](size_t n) {
    std::vector<DynamicBatcher::Submission> group;
    for (size_t k = 0; k < n; ++k) {
      group.push_back({rows({1}), std::nullopt, [&, k](std::exception_ptr error, Tensors) {
                         try {
                           if (error) std::rethrow_exception(error);
                           outcome[k] = "ok";
                         } catch (const OverloadedError&) {
                           outcome[k] = "overloaded";
                         } catch (const UnavailableError&) {
                           outcome[k] = "unavailable";
                         }
                         answered.fetch_add(1);
                       },
                       {}});
    }
    return group;
  };
  batcher.submit(group_of(4));
  wait_until([&] { return answered.load() == 2; });  // the two refused, at once
  EXPECT_EQ(outcome[2], "overloaded");
  EXPECT_EQ(outcome[3], "overloaded");
  model.gate_open = true;
  blocker.get();
  wait_until([&] { return answered.load() == 4; });
  EXPECT_EQ(outcome[0], "ok");
  EXPECT_EQ(outcome[1], "ok");
  batcher.shutdown();
  answered = 0;
  batcher.submit(group_of(2));
  EXPECT_EQ(answered.load(), 2);
  EXPECT_EQ(outcome[0], "unavailable");
  EXPECT_EQ(outcome[1], "unavailable");
}

#include "grpc/server.h"

#include <chrono>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "grpc_service.grpc.pb.h"
#include "log.h"
#include "protocol.h"
#include "service.h"
#include "status.h"
#include "torchship/dtypes.h"
#include "torchship/errors.h"
#include "torchship/model.h"

namespace torchship::serve::grpc_front {
namespace {

using json = nlohmann::json;
using inference::GRPCInferenceService;

// Elements in one input tensor; beyond, a shape is refused before anything is allocated.
constexpr int64_t kMaxElements = int64_t{1} << 31;

grpc::Status to_status(std::exception_ptr error, std::string_view rpc) {
  const auto s = classify(error);
  if (s.internal) log::error("gRPC " + std::string(rpc) + ": " + s.message);
  return grpc::Status(static_cast<grpc::StatusCode>(s.grpc), s.message);
}

std::optional<std::string_view> opt(const std::string& s) {
  if (s.empty()) return std::nullopt;
  return std::string_view(s);
}

// Service's JSON (Triton's JSON form of the message) -> the message.
void from_json(const json& doc, google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(doc.dump(), message, options);
  if (!status.ok()) {
    throw std::runtime_error("cannot convert " + message->GetTypeName() + " from JSON: " + status.ToString());
  }
}

template <typename T, typename Field>
void copy_contents(torch::Tensor& t, const Field& field) {
  T* out = t.data_ptr<T>();
  for (int i = 0; i < field.size(); ++i) out[i] = static_cast<T>(field.Get(i));
}

// One input of a ModelInferRequest -> a tensor (a copy of its bytes).
torch::Tensor decode_input(const inference::ModelInferRequest::InferInputTensor& in, const std::string* raw,
                           size_t max_bytes) {
  const std::string name = echo(in.name());
  const auto dtype = dtype_from_name(in.datatype());
  std::vector<int64_t> shape;
  shape.reserve(static_cast<size_t>(in.shape_size()));
  int64_t numel = 1;
  for (const int64_t d : in.shape()) {
    if (d < 0) throw InvalidInputError("input " + name + ": shape dimensions must be non-negative, got " + std::to_string(d));
    if (d > 0 && numel > kMaxElements / d) {
      throw InvalidInputError("input " + name + ": too many elements (the limit is " + std::to_string(kMaxElements) + ")");
    }
    numel *= d;
    shape.push_back(d);
  }
  const size_t element = c10::elementSize(dtype);
  const size_t bytes = static_cast<size_t>(numel) * element;
  if (bytes > max_bytes) {
    throw InvalidInputError("input " + name + ": " + std::to_string(bytes) + " bytes is more than the limit of " +
                            std::to_string(max_bytes));
  }
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  if (raw) {
    if (raw->size() != bytes) {
      throw InvalidInputError("input " + name + ": raw_input_contents holds " + std::to_string(raw->size()) +
                              " bytes, its datatype " + in.datatype() + " and shape need " + std::to_string(bytes));
    }
    if (bytes > 0) std::memcpy(t.data_ptr(), raw->data(), bytes);
    return t;
  }
  const auto& c = in.contents();
  auto check = [&](int count, const char* field) {
    if (count != numel) {
      throw InvalidInputError("input " + name + ": " + std::string(field) + " holds " + std::to_string(count) +
                              " values, its shape needs " + std::to_string(numel));
    }
  };
  switch (dtype) {
    case torch::kFloat32: check(c.fp32_contents_size(), "fp32_contents"); copy_contents<float>(t, c.fp32_contents()); break;
    case torch::kFloat64: check(c.fp64_contents_size(), "fp64_contents"); copy_contents<double>(t, c.fp64_contents()); break;
    case torch::kInt8: check(c.int_contents_size(), "int_contents"); copy_contents<int8_t>(t, c.int_contents()); break;
    case torch::kInt16: check(c.int_contents_size(), "int_contents"); copy_contents<int16_t>(t, c.int_contents()); break;
    case torch::kInt32: check(c.int_contents_size(), "int_contents"); copy_contents<int32_t>(t, c.int_contents()); break;
    case torch::kInt64: check(c.int64_contents_size(), "int64_contents"); copy_contents<int64_t>(t, c.int64_contents()); break;
    case torch::kUInt8: check(c.uint_contents_size(), "uint_contents"); copy_contents<uint8_t>(t, c.uint_contents()); break;
    case torch::kUInt16: check(c.uint_contents_size(), "uint_contents"); copy_contents<uint16_t>(t, c.uint_contents()); break;
    case torch::kBool: check(c.bool_contents_size(), "bool_contents"); copy_contents<bool>(t, c.bool_contents()); break;
    default:
      throw InvalidInputError("input " + name + ": datatype " + in.datatype() +
                              " takes its data only in raw_input_contents");
  }
  return t;
}

// A ModelInfer call: finishes from the batcher's callback; a client that leaves sets the cancel flag,
// which drops the request while it is still queued.
class InferReactor : public grpc::ServerUnaryReactor {
 public:
  explicit InferReactor(Counters& counters)
      : counters_(counters), cancelled_(std::make_shared<std::atomic<bool>>(false)) {}
  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }
  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override { delete this; }
  // Finish, counted once by its status code (a call the client cancelled counts as CANCELLED).
  void finish(const grpc::Status& status) {
    counters_.count(cancelled_->load() ? grpc::StatusCode::CANCELLED : status.error_code());
    Finish(status);
  }

 private:
  Counters& counters_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
};

class Handler final : public GRPCInferenceService::CallbackService {
 public:
  Handler(serve::Service& service, Counters& counters, size_t max_bytes)
      : service_(service), counters_(counters), max_bytes_(max_bytes) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context, const inference::ServerLiveRequest*,
                                       inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return finish(context, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
                                        inference::ServerReadyResponse* response) override {
    return answer(context, "ServerReady", [&] { response->set_ready(service_.readiness().ready); });
  }

  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context, const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override {
    return answer(context, "ModelReady", [&] {
      const auto model = service_.find_model(request->name(), opt(request->version()));
      response->set_ready(model->ready() && !service_.draining());
    });
  }

  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
                                           inference::ServerMetadataResponse* response) override {
    return answer(context, "ServerMetadata", [&] {
      const auto doc = service_.server_metadata();
      response->set_name(doc.value("name", std::string()));
      response->set_version(doc.value("version", std::string()));
      if (const auto it = doc.find("extensions"); it != doc.end()) {
        for (const auto& e : *it) response->add_extensions(e.get<std::string>());
      }
    });
  }

  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override {
    return answer(context, "ModelMetadata", [&] {
      const auto doc = service_.model_metadata(*service_.find_model(request->name(), opt(request->version())));
      response->set_name(doc.value("name", std::string()));
      for (const auto& v : doc.at("versions")) response->add_versions(v.get<std::string>());
      response->set_platform(doc.value("platform", std::string()));
      auto tensors = [](const json& list, auto* out) {
        for (const auto& t : list) {
          auto* m = out->Add();
          m->set_name(t.at("name").get<std::string>());
          m->set_datatype(t.at("datatype").get<std::string>());
          for (const auto& d : t.at("shape")) m->add_shape(d.get<int64_t>());
        }
      };
      tensors(doc.at("inputs"), response->mutable_inputs());
      tensors(doc.at("outputs"), response->mutable_outputs());
    });
  }

  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context, const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override {
    return answer(context, "ModelConfig", [&] {
      const auto model = service_.find_model(request->name(), opt(request->version()));
      from_json(json{{"config", service_.model_config(*model)}}, response);
    });
  }

  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override {
    return answer(context, "ModelStatistics", [&] {
      from_json(service_.statistics(opt(request->name()), opt(request->version())), response);
    });
  }

  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override {
    return answer(context, "RepositoryIndex", [&] {
      from_json(json{{"models", service_.repository_index(request->ready())}}, response);
    });
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext*, const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override {
    auto* reactor = new InferReactor(counters_);
    try {
      auto model = service_.find_model(request->model_name(), opt(request->model_version()));
      model->refuse_if_overloaded();  // before decoding, as over HTTP
      NamedTensors inputs;
      std::vector<OutputSelection> selection;
      const auto decode_started = std::chrono::steady_clock::now();
      try {
        if (request->raw_input_contents_size() != 0 && request->raw_input_contents_size() != request->inputs_size()) {
          throw InvalidInputError("raw_input_contents must hold one entry per input: " +
                                  std::to_string(request->inputs_size()) + " input(s), " +
                                  std::to_string(request->raw_input_contents_size()) + " raw_input_contents");
        }
        const bool raw = request->raw_input_contents_size() != 0;
        inputs.reserve(static_cast<size_t>(request->inputs_size()));
        for (int i = 0; i < request->inputs_size(); ++i) {
          const auto& in = request->inputs(i);
          inputs.emplace_back(in.name(), decode_input(in, raw ? &request->raw_input_contents(i) : nullptr, max_bytes_));
        }
        InferRequest wanted;
        for (const auto& o : request->outputs()) {
          RequestedOutput r{o.name(), std::nullopt, std::nullopt};
          if (const auto it = o.parameters().find("classification"); it != o.parameters().end()) {
            const auto& p = it->second;
            const int64_t count = p.has_int64_param() ? p.int64_param() : p.has_uint64_param() ? static_cast<int64_t>(p.uint64_param()) : 0;
            if (count < 1) {
              throw InvalidInputError("outputs '" + o.name() + "': parameters.classification must be a positive int64");
            }
            r.classification = count;
          }
          wanted.outputs.push_back(std::move(r));
        }
        selection = select_outputs(model->config(), wanted);
      } catch (const InvalidInputError&) {
        model->stats().failed_invalid.fetch_add(1, std::memory_order_relaxed);  // never reached the model
        throw;
      }
      model->stats().decode_seconds.observe(seconds_since(decode_started));
      auto done = [reactor, response, model, selection = std::move(selection), id = request->id()](
                      std::exception_ptr error, std::vector<torch::Tensor> outputs) {
        if (error) return reactor->finish(to_status(error, "ModelInfer"));
        const auto encode_started = std::chrono::steady_clock::now();
        try {
          response->set_model_name(model->name());
          response->set_model_version(model->version());
          response->set_id(id);
          for (const auto& s : selection) {
            const auto t = outputs.at(s.index).to(torch::kCPU).contiguous();
            auto* out = response->add_outputs();
            out->set_name(model->config().outputs.at(s.index).name);
            if (s.classification > 0) {
              auto classified = classify_output(model->config(), s.index, t, s.classification);
              out->set_datatype("BYTES");
              for (const auto d : classified.shape) out->add_shape(d);
              *response->add_raw_output_contents() = serialize_bytes(classified.entries);
              continue;
            }
            out->set_datatype(dtype_name(t.scalar_type()));
            for (const auto d : t.sizes()) out->add_shape(d);
            response->add_raw_output_contents()->assign(static_cast<const char*>(t.data_ptr()), t.nbytes());
          }
        } catch (...) {
          return reactor->finish(to_status(std::current_exception(), "ModelInfer"));
        }
        model->stats().encode_seconds.observe(seconds_since(encode_started));
        reactor->finish(grpc::Status::OK);
      };
      model->submit(inputs, std::nullopt, std::move(done), reactor->cancelled());
    } catch (...) {
      reactor->finish(to_status(std::current_exception(), "ModelInfer"));
    }
    return reactor;
  }

 private:
  grpc::ServerUnaryReactor* finish(grpc::CallbackServerContext* context, const grpc::Status& status) {
    counters_.count(status.error_code());
    auto* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }

  template <typename F>
  grpc::ServerUnaryReactor* answer(grpc::CallbackServerContext* context, std::string_view rpc, F&& fill) {
    try {
      fill();
      return finish(context, grpc::Status::OK);
    } catch (...) {
      return finish(context, to_status(std::current_exception(), rpc));
    }
  }

  serve::Service& service_;
  Counters& counters_;
  size_t max_bytes_;
};

std::string address(const std::string& host, int port) {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

struct Server::Impl {
  Impl(Service& service, std::string h, int p, Counters& counters, size_t max_bytes)
      : handler(service, counters, max_bytes), host(std::move(h)), port(p), max_message_bytes(max_bytes) {}
  Handler handler;
  std::string host;
  int port;
  size_t max_message_bytes;
  std::unique_ptr<grpc::Server> server;
  std::once_flag stopped;
};

Server::Server(Service& service, std::string host, int port, Counters& counters, size_t max_message_bytes)
    : impl_(std::make_unique<Impl>(service, std::move(host), port, counters, max_message_bytes)) {}

Server::~Server() {
  if (impl_->server) shutdown(std::chrono::steady_clock::now());
}

int Server::start() {
  const auto where = address(impl_->host, impl_->port);
  const int limit = static_cast<int>(std::min<size_t>(impl_->max_message_bytes + (1 << 20),
                                                      static_cast<size_t>(std::numeric_limits<int>::max())));
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(where, grpc::InsecureServerCredentials(), &bound);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a port in use is an error, not shared
  builder.SetMaxReceiveMessageSize(limit);
  builder.SetMaxSendMessageSize(-1);
  builder.RegisterService(&impl_->handler);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || bound == 0) {
    impl_->server.reset();
    throw std::runtime_error("gRPC: cannot listen on " + where);
  }
  return bound;
}

void Server::shutdown(std::chrono::steady_clock::time_point deadline) {
  if (!impl_->server) return;
  std::call_once(impl_->stopped, [&] {
    const auto left = deadline - std::chrono::steady_clock::now();
    impl_->server->Shutdown(std::chrono::system_clock::now() +
                            std::chrono::duration_cast<std::chrono::system_clock::duration>(left));
    impl_->server->Wait();
  });
}

}  // namespace torchship::serve::grpc_front

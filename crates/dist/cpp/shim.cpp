// kiln-dist's C++ side: c10d's TCPStore rendezvous and ProcessGroupGloo collectives
// behind a small C interface. Every call catches what libtorch throws and hands the
// message to Rust (malloc'd; Rust frees it with kiln_dist_free_string), so no C++
// exception crosses into Rust.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef KILN_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs f; on a C++ exception stores its message in *err and returns false.
template <typename F>
bool guarded(char** err, F&& f) {
  try {
    f();
    return true;
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return false;
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      return c10d::ReduceOp::SUM;
  }
}

}  // namespace

struct kiln_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

struct kiln_work {
  c10::intrusive_ptr<c10d::Work> work;
};

extern "C" {

void kiln_dist_free_string(char* s) { std::free(s); }

// Rendezvous at host:port (rank 0 hosts the store there) and a group over it: Gloo, or
// NCCL on CUDA device `cuda_device` when it is 0 or more (builds with KILN_NCCL only).
// `bind` is the address this rank's Gloo device listens on (empty: the default device).
kiln_group* kiln_group_new(const char* host, uint16_t port, int rank, int world, int64_t timeout_ms,
                           const char* bind, const char* prefix, int cuda_device, char** err) {
  kiln_group* g = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    if (cuda_device >= 0) {
#ifdef KILN_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, nccl_options);
      g = new kiln_group{store, c10::intrusive_ptr<c10d::Backend>(nccl)};
      return;
#else
      throw std::runtime_error("this build of kiln has no NCCL: build it with the cuda feature");
#endif
    }
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    std::string b(bind);
    options->devices.push_back(b.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                         : c10d::ProcessGroupGloo::createDeviceForHostname(b));
    options->threads = 1;
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    g = new kiln_group{store, c10::intrusive_ptr<c10d::Backend>(backend)};
  });
  return g;
}

void kiln_group_free(kiln_group* g) { delete g; }

// Starts an allreduce of one tensor in place (op: 0 sum, 1 max, 2 min).
kiln_work* kiln_allreduce(kiln_group* g, at::Tensor* t, int op, char** err) {
  kiln_work* w = nullptr;
  guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = reduce_op(op);
    w = new kiln_work{g->backend->allreduce(ts, o)};
  });
  return w;
}

// Starts a broadcast of one tensor in place from `root`.
kiln_work* kiln_broadcast(kiln_group* g, at::Tensor* t, int root, char** err) {
  kiln_work* w = nullptr;
  guarded(err, [&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    w = new kiln_work{g->backend->broadcast(ts, o)};
  });
  return w;
}

// Starts an all-gather of `input` into `outputs` (one tensor per rank, each input's shape).
kiln_work* kiln_allgather(kiln_group* g, at::Tensor* input, at::Tensor** outputs, size_t n, char** err) {
  kiln_work* w = nullptr;
  guarded(err, [&] {
    std::vector<at::Tensor> in{*input};
    std::vector<std::vector<at::Tensor>> out(1);
    for (size_t i = 0; i < n; ++i) {
      out[0].push_back(*outputs[i]);
    }
    w = new kiln_work{g->backend->allgather(out, in)};
  });
  return w;
}

kiln_work* kiln_barrier(kiln_group* g, char** err) {
  kiln_work* w = nullptr;
  guarded(err, [&] { w = new kiln_work{g->backend->barrier()}; });
  return w;
}

// Waits for a collective to finish; frees the handle either way.
bool kiln_work_wait(kiln_work* w, char** err) {
  bool ok = guarded(err, [&] { w->work->wait(); });
  delete w;
  return ok;
}

// Makes `grad` the gradient of `param`: autograd then accumulates into it in place (as
// PyTorch DDP's gradient_as_bucket_view does), so a bucket holds its parameters'
// gradients without copies.
bool kiln_set_grad(at::Tensor* param, at::Tensor* grad, char** err) {
  return guarded(err, [&] { param->mutable_grad() = *grad; });
}

// The group's key-value store (shared by all ranks, hosted by rank 0).
bool kiln_store_set(kiln_group* g, const char* key, const uint8_t* value, size_t len, char** err) {
  return guarded(err, [&] { g->store->set(std::string(key), std::vector<uint8_t>(value, value + len)); });
}

// Whether every key is set (1), not all are (0), or the store cannot be reached (-1).
int kiln_store_check(kiln_group* g, const char* key, char** err) {
  int out = -1;
  guarded(err, [&] { out = g->store->check({std::string(key)}) ? 1 : 0; });
  return out;
}

}  // extern "C"

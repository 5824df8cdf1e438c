#include "lib/parallel/context.h"

#include "lib/nn/ops.h"
#include "lib/runtime/error.h"

namespace ditgen::parallel {

std::shared_ptr<Context> Context::single() {
  auto ctx = std::make_shared<Context>();
  ctx->mesh_ = comm::Mesh(comm::MeshShape{}, 1, 0);
  ctx->world_ = comm::make_self_communicator("world");
  ctx->tp_ = comm::make_self_communicator("tp");
  ctx->ulysses_ = comm::make_self_communicator("ulysses");
  ctx->ring_ = comm::make_self_communicator("ring");
  ctx->cp_ = comm::make_self_communicator("cp");
  ctx->cfg_ = comm::make_self_communicator("cfg");
  return ctx;
}

std::shared_ptr<Context> Context::create(std::shared_ptr<comm::Communicator> world, const comm::MeshShape& shape) {
  auto ctx = std::make_shared<Context>();
  ctx->mesh_ = comm::Mesh(shape, world->size(), world->rank());
  const auto& m = ctx->mesh_;
  ctx->world_ = world;
  // Same split order on every rank. An axis of size 1 needs no communicator (no NCCL init at
  // start-up); every rank knows the sizes, so all skip the same splits.
  auto group = [&](int size, int color, int key, const char* name) {
    return size == 1 ? comm::make_self_communicator(name) : world->split(color, key, name);
  };
  const auto& s = m.shape();
  ctx->tp_ = group(s.tp, m.tp_color(), m.tp_index(), "tp");
  ctx->ulysses_ = group(s.ulysses, m.ulysses_color(), m.ulysses_index(), "ulysses");
  ctx->ring_ = group(s.ring, m.ring_color(), m.ring_index(), "ring");
  ctx->cp_ = group(m.cp_size(), m.cp_color(), m.cp_index(), "cp");
  ctx->cfg_ = group(s.cfg, m.cfg_color(), m.cfg_index(), "cfg");
  return ctx;
}

std::vector<int64_t> chunk_sizes(int64_t n, const Context& ctx) { return comm::split_sizes(n, ctx.mesh().cp_size()); }

at::Tensor split_sequence(const at::Tensor& x, int64_t dim, const Context& ctx) {
  if (ctx.mesh().cp_size() == 1) return x;
  const auto sizes = chunk_sizes(x.size(dim), ctx);
  int64_t offset = 0;
  for (int i = 0; i < ctx.mesh().cp_index(); ++i) offset += sizes[i];
  return x.narrow(dim, offset, sizes[ctx.mesh().cp_index()]).contiguous();
}

at::Tensor gather_sequence(const at::Tensor& x, int64_t dim, int64_t full_len, const Context& ctx) {
  if (ctx.mesh().cp_size() == 1) return x;
  return ctx.cp().all_gather(x.contiguous(), dim, chunk_sizes(full_len, ctx));
}

at::Tensor attention_gathered_kv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t kv_full_len,
                                 const Context& ctx) {
  if (ctx.mesh().cp_size() == 1) return nn::attention(q, k, v);
  at::Tensor kv = gather_sequence(at::stack({k, v}, 0), 2, kv_full_len, ctx);  // [2, B, Sk, h, D]
  if (q.size(1) == 0) return at::zeros_like(q);
  return nn::attention(q, kv[0], kv[1]);
}

bool on_every_rank(bool mine, comm::Communicator& group, const at::Device& device) {
  if (group.size() == 1) return mine;
  at::Tensor no = at::full({1}, mine ? 0.0 : 1.0, at::TensorOptions().dtype(at::kFloat).device(device));
  group.all_reduce(no, comm::ReduceOp::Max);
  return no.item<float>() == 0.0f;
}

void tp_all_reduce(at::Tensor& partial, const Context& ctx) {
  if (ctx.mesh().shape().tp > 1) ctx.tp().all_reduce(partial, comm::ReduceOp::Sum);
}

std::function<void(at::Tensor&)> tp_sum_of(const Context& ctx) {
  if (ctx.mesh().shape().tp == 1) return {};
  return [&ctx](at::Tensor& partial) { tp_all_reduce(partial, ctx); };
}

namespace {

// Merges a new partial attention result into the running one, in fp32:
// out = out - sigmoid(lse_new - lse) * (out - out_new); lse = log(exp(lse) + exp(lse_new)).
void merge_partial(at::Tensor& out, at::Tensor& lse, const at::Tensor& out_new, const at::Tensor& lse_new) {
  at::Tensor l_new = lse_new.to(at::kFloat);
  // Rows that saw no key so far and in this block (masked keys) have lse -inf on both sides: weight 0.
  at::Tensor w = at::nan_to_num(at::sigmoid(l_new - lse), 0.0).unsqueeze(-1);  // [B, S, H, 1]
  out = out - w * (out - out_new.to(at::kFloat));
  lse = at::logaddexp(lse, l_new);
}

// Attention over local keys, with the keys' visibility mask when there is one.
nn::AttentionLse local_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& key_mask, bool want_lse) {
  if (key_mask.defined()) return nn::attention_visible_keys(q, k, v, key_mask, want_lse);
  if (want_lse) return nn::attention_with_lse(q, k, v);
  return {nn::attention(q, k, v), at::Tensor()};
}

// Ring attention over the ring group. q [B, Sq, h, D]; k/v [B, Sk_r, h, D] where block r' has
// `block_lens[r']` tokens and `block_masks[r']` (if given) says which are visible.
// Returns [B, Sq, h, D] in q's dtype.
at::Tensor ring_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::vector<int64_t>& block_lens, const std::vector<at::Tensor>& block_masks,
                          const Context& ctx) {
  comm::Communicator& ring = ctx.ring();
  const int n = ring.size(), me = ring.rank();
  at::Tensor kv = at::stack({k, v}, 0).contiguous();  // [2, B, S, h, D]
  at::Tensor out, lse;
  for (int step = 0; step < n; ++step) {
    const int block = ((me - step) % n + n) % n;  // whose K/V we hold now
    std::unique_ptr<comm::Work> work;
    at::Tensor next;
    if (step < n - 1) {
      const int incoming = ((me - step - 1) % n + n) % n;
      auto shape = kv.sizes().vec();
      shape[2] = block_lens[incoming];
      next = at::empty(shape, kv.options());
      work = ring.send_recv(kv, (me + 1) % n, next, (me - 1 + n) % n);
    }
    if (block_lens[block] > 0 && q.size(1) > 0) {
      auto part = local_attention(q, kv[0], kv[1], block_masks.empty() ? at::Tensor() : block_masks[block], true);
      if (!out.defined()) {
        out = part.out.to(at::kFloat);
        lse = part.lse.to(at::kFloat);
      } else {
        merge_partial(out, lse, part.out, part.lse);
      }
    }
    if (work) {
      work->wait();
      kv = next;
    }
  }
  if (!out.defined()) return at::zeros_like(q);
  return out.to(q.scalar_type());
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::vector<int64_t>& local_lens, const Context& ctx,
                     const std::vector<at::Tensor>& key_masks) {
  const auto& m = ctx.mesh();
  const int U = m.shape().ulysses, R = m.shape().ring;
  if (U == 1 && R == 1) return local_attention(q, k, v, key_masks.empty() ? at::Tensor() : key_masks[0], false).out;

  at::Tensor qu = q, ku = k, vu = v;
  std::vector<int64_t> ring_lens(R, 0);  // sequence length each ring block holds after Ulysses
  std::vector<at::Tensor> ring_masks;    // and which of its keys are visible: chunks r*U .. r*U+U-1
  for (int r = 0; r < R; ++r) {
    std::vector<at::Tensor> parts;
    for (int u = 0; u < U; ++u) {
      ring_lens[r] += local_lens[r * U + u];
      if (!key_masks.empty()) parts.push_back(key_masks[r * U + u]);
    }
    if (!key_masks.empty()) ring_masks.push_back(at::cat(parts, 1));
  }

  const int64_t heads = q.size(2);
  if (U > 1) {
    DITGEN_CHECK(heads % U == 0, "attention: {} local heads cannot be split over ulysses {}", heads, U);
    const int64_t h = heads / U;
    at::Tensor qkv = at::stack({q, k, v}, 0);  // [3, B, S, H, D]
    std::vector<at::Tensor> send;
    std::vector<std::vector<int64_t>> recv_shapes;
    for (int u = 0; u < U; ++u) {
      send.push_back(qkv.narrow(3, u * h, h).contiguous());
      auto shape = qkv.sizes().vec();
      shape[2] = local_lens[m.ring_index() * U + u];
      shape[3] = h;
      recv_shapes.push_back(shape);
    }
    at::Tensor full = at::cat(ctx.ulysses().all_to_all(send, recv_shapes), 2);  // [3, B, S_ring, h, D]
    qu = full[0];
    ku = full[1];
    vu = full[2];
  }

  at::Tensor o = R > 1 ? ring_attention(qu, ku, vu, ring_lens, ring_masks, ctx)
                       : local_attention(qu, ku, vu, ring_masks.empty() ? at::Tensor() : ring_masks[0], false).out;

  if (U > 1) {
    std::vector<at::Tensor> send;
    std::vector<std::vector<int64_t>> recv_shapes;
    int64_t offset = 0;
    const int64_t mine = local_lens[m.cp_index()];
    for (int u = 0; u < U; ++u) {
      const int64_t len = local_lens[m.ring_index() * U + u];
      send.push_back(o.narrow(1, offset, len).contiguous());
      offset += len;
      auto shape = o.sizes().vec();
      shape[1] = mine;
      recv_shapes.push_back(shape);
    }
    o = at::cat(ctx.ulysses().all_to_all(send, recv_shapes), 2);  // [B, S_local, H_local, D]
  }
  return o;
}

}  // namespace ditgen::parallel

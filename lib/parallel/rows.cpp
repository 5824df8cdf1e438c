#include "lib/parallel/rows.h"

#include <algorithm>

#include "lib/comm/mesh.h"
#include "lib/runtime/error.h"

namespace ditgen::parallel {

RowSplit::RowSplit(comm::Communicator* world, int64_t rows) : rows_(rows), local_(rows) {
  DITGEN_CHECK(rows >= 1, "internal: VAE-P: an image of {} rows", rows);
  if (world == nullptr || world->size() == 1) return;
  world_ = world;
  const int size = world->size(), rank = world->rank();
  sizes_ = comm::split_sizes(rows, size);  // the first ranks take one row more; idle ranks come last
  offsets_.assign(sizes_.size(), 0);
  for (size_t r = 1; r < sizes_.size(); ++r) offsets_[r] = offsets_[r - 1] + sizes_[r - 1];
  begin_ = offsets_[rank];
  local_ = sizes_[rank];
  const int active = static_cast<int>(std::min<int64_t>(rows, size));
  if (active == size) {
    group_ = world;
  } else if (active > 1) {
    // Only when an image has fewer rows than there are ranks (tiny sizes): a group of the ranks holding
    // rows, whose group ranks equal their world ranks.
    own_ = world->split(rank < active ? 0 : 1, rank, "vae_rows");
    if (rank < active) group_ = own_.get();
  }
}

RowSplit RowSplit::encoder(comm::Communicator* world, int64_t rows, int64_t factor) {
  DITGEN_CHECK(factor >= 1 && rows >= factor,
               "VAE encode: an image of {} rows is smaller than the encoder's downsampling factor {}", rows,
               factor);
  RowSplit s = RowSplit(world, rows / factor).scaled(factor);
  const int64_t rest = rows - s.rows_;
  if (!s.distributed()) {
    s.rows_ = s.local_ = rows;  // this process holds every row
    return s;
  }
  if (rest == 0) return s;
  // The rows the floors drop belong to the last band holding rows; the idle bands after it start later.
  const size_t last = static_cast<size_t>(std::min<int64_t>(rows / factor, s.world_->size())) - 1;
  s.sizes_[last] += rest;
  for (size_t r = last + 1; r < s.offsets_.size(); ++r) s.offsets_[r] += rest;
  s.rows_ = rows;
  const auto me = static_cast<size_t>(s.world_->rank());
  s.begin_ = s.offsets_[me];
  s.local_ = s.sizes_[me];
  return s;
}

RowSplit RowSplit::downscaled(int64_t factor) const {
  RowSplit s = *this;
  s.rows_ = rows_ / factor;
  if (!distributed()) {
    s.local_ = s.rows_;
    return s;
  }
  DITGEN_CHECK(factor >= 1 && rows_ >= factor, "internal: VAE-P: downscaling {} rows by {}", rows_, factor);
  for (auto& v : s.offsets_) {
    DITGEN_CHECK(v % factor == 0 || v == rows_, "internal: VAE-P: a band starting at row {} downscaled by {}",
                 v, factor);
    v = std::min(v / factor, s.rows_);
  }
  for (size_t r = 0; r < s.sizes_.size(); ++r)
    s.sizes_[r] = (r + 1 < s.offsets_.size() ? s.offsets_[r + 1] : s.rows_) - s.offsets_[r];
  const auto me = static_cast<size_t>(world_->rank());
  s.begin_ = s.offsets_[me];
  s.local_ = s.sizes_[me];
  // A band that held rows must keep one, or the group of ranks holding rows would change.
  for (size_t r = 0; r < s.sizes_.size(); ++r)
    DITGEN_CHECK((sizes_[r] == 0) == (s.sizes_[r] == 0),
                 "internal: VAE-P: rank {}'s band of {} rows vanishes when downscaled by {}", r, sizes_[r],
                 factor);
  return s;
}

RowSplit RowSplit::scaled(int64_t factor) const {
  RowSplit s = *this;
  s.rows_ *= factor;
  s.begin_ *= factor;
  s.local_ *= factor;
  for (auto& v : s.sizes_) v *= factor;
  for (auto& v : s.offsets_) v *= factor;
  return s;
}

int64_t RowSplit::owner(int64_t row) const {
  // Idle ranks sit at the end with offset rows_, so an image row never maps to them.
  return std::upper_bound(offsets_.begin(), offsets_.end(), row) - offsets_.begin() - 1;
}

at::Tensor RowSplit::slice(const at::Tensor& full, int64_t dim) const {
  if (!distributed()) return full;
  DITGEN_CHECK(full.size(dim) == rows_, "internal: VAE-P: slicing {} rows of a tensor of {}", rows_,
               full.size(dim));
  return full.narrow(dim, begin_, local_);
}

at::Tensor RowSplit::with_halo(const at::Tensor& band, int64_t dim, int64_t halo, RowPad pad) const {
  if (!split() || halo == 0) return band;
  dim = at::maybe_wrap_dim(dim, band.dim());
  auto shape = band.sizes().vec();
  shape[dim] += 2 * halo;
  at::Tensor padded = at::empty(shape, band.options());
  padded.narrow(dim, halo, band.size(dim)).copy_(band);
  fill_halo(padded, dim, halo, pad);
  return padded;  // [..., halo + local + halo, ...]
}

at::Tensor RowSplit::with_rows_below(const at::Tensor& band, int64_t dim, int64_t n) const {
  if (n == 0) return band;
  dim = at::maybe_wrap_dim(dim, band.dim());
  if (!split()) {
    // constant_pad_nd's pairs run from the last dim: the last entry pads the bottom of `dim`.
    std::vector<int64_t> pad(2 * static_cast<size_t>(band.dim() - dim), 0);
    pad[pad.size() - 1] = n;
    return at::constant_pad_nd(band, pad, 0);  // [..., local + n, ...]
  }
  // The symmetric halo's lower half; the n rows above are dropped (a small exchange for simpler code).
  return with_halo(band, dim, n, RowPad::Zeros).narrow(dim, n, band.size(dim) + n);
}

void RowSplit::fill_halo(const at::Tensor& padded, int64_t dim, int64_t halo, RowPad pad) const {
  if (halo == 0) return;
  dim = at::maybe_wrap_dim(dim, padded.dim());
  const int64_t n = padded.size(dim) - 2 * halo;  // this rank's rows
  const int64_t total = split() ? rows_ : n, first = split() ? begin_ : 0;
  DITGEN_CHECK(n >= 1 && (!split() || n == local_),
               "internal: VAE-P halo: a padded band of {} rows with halo {} on a rank holding {} rows",
               padded.size(dim), halo, local_);
  DITGEN_CHECK(pad != RowPad::Reflect || total > halo,
               "reflect padding of {} rows needs an image of more than {} rows, got {}", halo, halo, total);

  // The image row a padded row copies (-1: a zero row).
  const auto source = [&](int64_t g) -> int64_t {
    if (g >= 0 && g < total) return g;
    switch (pad) {
      case RowPad::Zeros: return -1;
      case RowPad::Replicate: return g < 0 ? 0 : total - 1;
      case RowPad::Reflect: return g < 0 ? -g : 2 * (total - 1) - g;
    }
    return -1;
  };
  // The sources of a band's 2*halo padded rows: those above it, then those below.
  const auto halo_sources = [&](int64_t b, int64_t e) {
    std::vector<int64_t> s;
    for (int64_t i = 0; i < halo; ++i) s.push_back(source(b - halo + i));
    for (int64_t i = 0; i < halo; ++i) s.push_back(source(e + i));
    return s;
  };
  const auto interior = [&](int64_t g) { return padded.narrow(dim, halo + g - first, 1); };
  const std::vector<int64_t> mine = halo_sources(first, first + n);

  // Rows held elsewhere: one all-to-all in which rank p sends rank q the rows of p's band that q's
  // padded rows copy, in q's order. Every rank derives every other rank's needs from the split.
  std::vector<at::Tensor> received;
  if (split()) {
    const int me = group_->rank(), size = group_->size();
    std::vector<at::Tensor> send(size);
    std::vector<std::vector<int64_t>> recv_shapes(size);
    for (int q = 0; q < size; ++q) {
      std::vector<at::Tensor> rows;
      int64_t count = 0;
      if (q != me) {
        for (int64_t g : halo_sources(offsets_[q], offsets_[q] + sizes_[q]))
          if (g >= 0 && owner(g) == me) rows.push_back(interior(g));
        for (int64_t g : mine)
          if (g >= 0 && owner(g) == q) ++count;
      }
      auto shape = padded.sizes().vec();
      shape[dim] = 0;
      send[q] = rows.empty() ? at::empty(shape, padded.options()) : at::cat(rows, dim);
      shape[dim] = count;
      recv_shapes[q] = shape;
    }
    received = group_->all_to_all(send, recv_shapes);
  }

  std::vector<int64_t> taken(received.size(), 0);
  for (int64_t i = 0; i < 2 * halo; ++i) {
    at::Tensor dst = padded.narrow(dim, i < halo ? i : n + i, 1);
    const int64_t g = mine[static_cast<size_t>(i)];
    if (g < 0) {
      dst.zero_();
    } else if (g >= first && g < first + n) {
      dst.copy_(interior(g));
    } else {
      const auto p = static_cast<size_t>(owner(g));
      dst.copy_(received[p].narrow(dim, taken[p]++, 1));
    }
  }
}

at::Tensor RowSplit::all_rows(const at::Tensor& band, int64_t dim, int64_t per_row) const {
  if (!split()) return band;
  std::vector<int64_t> sizes(static_cast<size_t>(group_->size()));
  for (size_t r = 0; r < sizes.size(); ++r) sizes[r] = sizes_[r] * per_row;
  return group_->all_gather(band.contiguous(), dim, sizes);
}

at::Tensor RowSplit::gather(const at::Tensor& band, int64_t dim) const {
  if (!distributed()) return band;
  return world_->all_gather(band.contiguous(), dim, sizes_);
}

at::Tensor group_norm(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                      double eps, const RowSplit& rows) {
  if (!rows.split()) return at::group_norm(x, groups, weight, bias, eps);
  const int64_t b = x.size(0), c = x.size(1), cg = c / groups;
  DITGEN_CHECK(x.dim() >= 3 && c % groups == 0,
               "internal: VAE-P group norm of {} channels in {} groups on a {}-d tensor", c, groups, x.dim());
  const at::Tensor xg = x.reshape({b, groups, cg, -1});  // [B, G, C/G, rest]

  // This rank's mean and variance per (sample, group), in fp32 one group at a time (no fp32 copy of x).
  at::Tensor mine = at::empty({2, b, groups}, x.options().dtype(at::kFloat));
  for (int64_t g = 0; g < groups; ++g) {
    const auto [var, mean] = at::var_mean(xg.select(1, g).to(at::kFloat), {1, 2}, /*unbiased=*/false);  // [B]
    mine[0].select(1, g).copy_(mean);
    mine[1].select(1, g).copy_(var);
  }
  comm::Communicator& group = rows.group();
  const int size = group.size();
  at::Tensor all = group.all_gather(mine.to(at::kDouble).view({1, -1}), 0, std::vector<int64_t>(size, 1))
                       .view({size, 2, b, groups});  // every rank's, fp64
  // Rank r's count per (sample, group): its rows times the entries per row.
  const int64_t per_row = cg * xg.size(3) / rows.local();
  std::vector<double> counts(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) counts[r] = static_cast<double>(per_row * rows.sizes()[r]);
  const at::Tensor n = at::tensor(counts, at::kDouble).to(all.device()).view({size, 1, 1});
  const double total = static_cast<double>(per_row * rows.rows());
  // Chan et al.: mean = sum n_r m_r / N; var = sum n_r (v_r + (m_r - mean)^2) / N.
  const at::Tensor m = all.select(1, 0), v = all.select(1, 1);  // [size, B, G]
  const at::Tensor mean = (m * n).sum(0) / total;                // [B, G]
  const at::Tensor var = ((v + (m - mean).square()) * n).sum(0) / total;

  // y = x * scale + shift per (sample, channel), as at::group_norm computes it.
  const auto opt = all.options();
  const std::vector<int64_t> gshape = {1, groups, cg};
  const at::Tensor w = weight.defined() ? weight.to(opt).view(gshape) : at::ones(gshape, opt);
  const at::Tensor bb = bias.defined() ? bias.to(opt).view(gshape) : at::zeros(gshape, opt);
  const at::Tensor scale_d = (var + eps).rsqrt().unsqueeze(-1) * w;  // [B, G, C/G]
  const at::Tensor scale = scale_d.to(at::kFloat).unsqueeze(-1);     // [B, G, C/G, 1]
  const at::Tensor shift = (bb - mean.unsqueeze(-1) * scale_d).to(at::kFloat).unsqueeze(-1);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor og = out.view({b, groups, cg, -1});
  for (int64_t g = 0; g < groups; ++g) {
    const at::Tensor xf = xg.select(1, g).to(at::kFloat);  // [B, C/G, rest]
    og.select(1, g).copy_(at::addcmul(shift.select(1, g), xf, scale.select(1, g)));
  }
  return out;  // [B, C, *] in x's dtype
}

}  // namespace ditgen::parallel

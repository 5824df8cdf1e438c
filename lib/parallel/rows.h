#pragma once
// VAE-P (DESIGN.md 6, --parallel-vae): a VAE decoder's or encoder's activations split by rows (the image
// height) over the ranks, each rank holding one contiguous band of rows, so that each holds about 1/N of
// every activation and the result equals the single-rank decode or encode. Upstream spreads whole
// overlapping tiles instead (docs/reference/cache-dit-semantics.md 4.2), which blends seams; this is
// exact. What crosses ranks:
//  - a convolution's k/2 rows above and below the band, from the neighbours (the halo); rows beyond the
//    image's top and bottom are padded as the convolution pads them (zeros, replicate, reflect);
//  - group-norm statistics: each rank's per-(sample, group) count, mean and variance, combined in fp64;
//  - the keys and values of the mid block's attention over the whole image (at the latent size: small);
//  - the decoded image (the encoded latents), gathered on every rank at the end (as the reference relays
//    it to every rank).
// An upsampler turns each row into `f` rows on the rank that holds it (scaled()), so the bands follow
// the latent rows' split all the way up. An encoder runs the other way: its input is split by the latent
// rows it will produce (encoder()), every band starting on a multiple of the total downsampling, so that
// each stride-2 downsampler keeps its rows on their rank (downscaled(); the row below a band comes from
// the neighbour, with_rows_below()). With more ranks than latent rows the ranks past the last row hold
// nothing: they skip the decoder or encoder and only take part in gather().
//
// Every helper is the identity when the rows are not split (one process, or --parallel-vae off), so a
// VAE calls them unconditionally.
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "lib/comm/communicator.h"

namespace ditgen::parallel {

// How a convolution pads rows beyond the image's top and bottom.
enum class RowPad { Zeros, Replicate, Reflect };

class RowSplit {
 public:
  // Not split: this process holds every row, whatever their number.
  RowSplit() = default;
  // `rows` rows over the ranks of `world` (null or one rank: not split), in bands of
  // comm::split_sizes(rows, world size), rank order top to bottom. With fewer rows than ranks this is a
  // collective over `world` (the ranks holding rows get a group of their own); every rank must call it
  // with the same `rows`.
  RowSplit(comm::Communicator* world, int64_t rows);
  // An encoder's input of `rows` rows whose downsamplers (each to floor(rows/2)) reduce it by `factor`:
  // the floor(rows/factor) output rows split as RowSplit(world, rows/factor), each band holding `factor`
  // input rows per output row, the last holding also the rows % factor rows upstream's floors drop.
  // Collective like the constructor; needs rows >= factor.
  static RowSplit encoder(comm::Communicator* world, int64_t rows, int64_t factor);

  // More than one rank holds rows: the decoder's convolutions, norms and attention exchange data.
  bool split() const { return group_ != nullptr; }
  // More than one rank takes part (gather() moves data), whether or not this one holds rows.
  bool distributed() const { return world_ != nullptr; }
  // This rank holds no rows (more ranks than rows): it skips the decoder and only calls gather().
  bool idle() const { return distributed() && local() == 0; }

  int64_t rows() const { return rows_; }  // all ranks' rows (0 when not distributed: unknown)
  int64_t begin() const { return begin_; }
  int64_t local() const { return local_; }  // this rank's rows
  // Rows per rank of the world (empty when not distributed).
  const std::vector<int64_t>& sizes() const { return sizes_; }

  // The same split after every row became `factor` rows on the rank holding it (an upsampler).
  RowSplit scaled(int64_t factor) const;

  // The split after a stride-`factor` downsampler whose output row i starts at input row factor*i: bands
  // begin at begin/factor, the image has floor(rows/factor) rows. Every band must begin on a multiple of
  // `factor` (true at each level of an encoder() split).
  RowSplit downscaled(int64_t factor) const;

  // This rank's band of the full tensor `full` along `dim` (a view; no communication).
  at::Tensor slice(const at::Tensor& full, int64_t dim) const;

  // The band with `halo` rows of the neighbours above and below along `dim`: rows [begin - halo,
  // end + halo) of the image, those outside it padded by `pad`. A convolution over it then pads the rows
  // by 0 (see conv_padding()). Not split: `band` itself (the convolution pads).
  at::Tensor with_halo(const at::Tensor& band, int64_t dim, int64_t halo, RowPad pad) const;
  // The band with the `n` rows below it along `dim` (the next band's first rows; zeros below the image),
  // as a downsampler reads it after upstream's zero padding of the bottom (Flux2's and Qwen-Image's
  // ZeroPad2d(0, 1, 0, 1) before a stride-2 convolution). Not split: `band` and `n` zero rows.
  at::Tensor with_rows_below(const at::Tensor& band, int64_t dim, int64_t n) const;
  // The rows' padding a convolution with `padding` applies to with_halo()'s result.
  int64_t conv_padding(int64_t padding) const { return split() ? 0 : padding; }
  // In place: `padded` holds `halo` unset rows, this rank's band, then `halo` unset rows along `dim`;
  // fills the unset rows as with_halo() does (also when not split: then every one is a border row).
  void fill_halo(const at::Tensor& padded, int64_t dim, int64_t halo, RowPad pad) const;

  // Every row of the image from every rank's band along `dim`, where each row is `per_row` entries of
  // `dim` (pixel tokens [B, rows*W, C]: per_row = W), on every rank holding rows. Not split: `band`.
  at::Tensor all_rows(const at::Tensor& band, int64_t dim, int64_t per_row = 1) const;
  // The decode's last step: the full tensor along `dim` on every rank of the world; an idle rank passes
  // a band of 0 rows with the other dims right. Not distributed: `band`.
  at::Tensor gather(const at::Tensor& band, int64_t dim) const;

  // The group of the ranks holding rows (split() only).
  comm::Communicator& group() const { return *group_; }

 private:
  int64_t owner(int64_t row) const;  // the group rank whose band holds global `row`

  comm::Communicator* world_ = nullptr;
  comm::Communicator* group_ = nullptr;           // world_, or own_ with fewer rows than ranks
  std::shared_ptr<comm::Communicator> own_;       // the group split off the world, when needed
  std::vector<int64_t> sizes_, offsets_;          // per world rank (idle ranks: 0 rows at the end)
  int64_t rows_ = 0, begin_ = 0, local_ = 0;
};

// GroupNorm of x [B, C, *] whose rows are split: each rank's per-(sample, group) mean and variance (fp32
// over its band) are combined over the ranks in fp64 (Chan et al.), then x is normalised in fp32, one
// group at a time, into a tensor of x's dtype. Not split: at::group_norm.
at::Tensor group_norm(const at::Tensor& x, int64_t groups, const at::Tensor& weight, const at::Tensor& bias,
                      double eps, const RowSplit& rows);

}  // namespace ditgen::parallel

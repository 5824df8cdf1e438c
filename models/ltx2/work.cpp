#include "models/ltx2/work.h"

namespace ditgen::ltx2 {

pipeline::StepWork step_work(const TransformerConfig& c, int64_t video_tokens, int64_t audio_tokens,
                             int64_t text_tokens, int64_t batch, int branches, bool text_keys_per_step) {
  const int64_t D = c.inner_dim(), Da = c.audio_inner_dim(), C = c.caption_channels;
  const int64_t H = c.num_attention_heads, hd = c.attention_head_dim;
  const int64_t Ha = c.audio_num_attention_heads, hda = c.audio_attention_head_dim, Dx = Ha * hda;  // a2v / v2a width
  const int64_t Nv = batch * video_tokens, Na = batch * audio_tokens, Lt = batch * text_tokens;
  const double n = static_cast<double>(branches), nl = n * static_cast<double>(c.num_layers);
  pipeline::WorkCounter w;
  // Input and output projections, the caption projections (GELU MLPs on each text context), the six
  // AdaLN-single embeddings (timestep MLP + modulation).
  w.linear(Nv, c.in_channels, D, n);
  w.linear(Na, c.audio_in_channels, Da, n);
  w.linear(Nv, D, c.out_channels, n);
  w.linear(Na, Da, c.audio_out_channels, n);
  w.linear(Lt, C, D, n);
  w.linear(Lt, D, D, n);
  w.linear(Lt, C, Da, n);
  w.linear(Lt, Da, Da, n);
  for (const auto& [width, mods] : {std::pair<int64_t, int64_t>{D, 6}, {Da, 6}, {D, 4}, {Da, 4}, {D, 1}, {Da, 1}}) {
    w.linear(batch, 256, width, n);
    w.linear(batch, width, width, n);
    w.linear(batch, width, mods * width, n);
  }
  // Every block. Video: self-attention (q, k, v, out), text cross-attention (q, out on the video; k, v on
  // the text, once per prompt), audio-to-video (q, out on the video; k, v on the audio), the 4x GELU MLP.
  // Audio: the same with video-to-audio (q, out on the audio; k, v on the video).
  auto stream = [&](int64_t n, int64_t width, int64_t other_n, int64_t other_width) {
    w.linear(n, width, width, 4 * nl);
    w.linear(n, width, width, 2 * nl);
    if (text_keys_per_step) w.linear(Lt, width, width, 2 * nl);
    w.linear(n, width, Dx, nl);
    w.linear(other_n, other_width, Dx, 2 * nl);
    w.linear(n, Dx, width, nl);
    w.linear(n, width, 4 * width, nl);
    w.linear(n, 4 * width, width, nl);
  };
  stream(Nv, D, Na, Da);
  stream(Na, Da, Nv, D);
  // Attention: video self, video -> text, audio self, audio -> text, audio -> video keys, video -> audio keys.
  const int64_t Sv = video_tokens, Sa = audio_tokens, St = text_tokens;
  w.attention(batch, H, Sv, Sv, hd, nl);
  w.attention(batch, H, Sv, St, hd, nl);
  w.attention(batch, Ha, Sa, Sa, hda, nl);
  w.attention(batch, Ha, Sa, St, hda, nl);
  w.attention(batch, Ha, Sv, Sa, hda, nl);
  w.attention(batch, Ha, Sa, Sv, hda, nl);
  return w.result();
}

}  // namespace ditgen::ltx2

#include "lib/io/video.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>

#include "lib/io/image.h"
#include "lib/io/safetensors.h"
#include "lib/runtime/error.h"

#if DITGEN_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>
#include <libswscale/swscale.h>
}
#endif

namespace ditgen::io {

namespace {

std::string shape_of(const at::Tensor& t) { return t.defined() ? shape_str(t.sizes()) : "no tensor"; }

// [2, S] float -> [S, 2] int16, interleaved as WAV and the AAC input want it. The reference clips to
// [-1, 1] and scales by 32767 (docs/reference/ltx2.md §7); we round rather than truncate.
at::Tensor audio_s16(const at::Tensor& audio) {
  DITGEN_CHECK(audio.defined() && audio.dim() == 2 && audio.size(0) == 2 && audio.size(1) > 0,
               "expected stereo audio [2, S] with S > 0, got {}", shape_of(audio));
  DITGEN_CHECK(at::isFloatingType(audio.scalar_type()), "expected float audio samples in [-1, 1]");
  return at::round(audio.to(at::kCPU, at::kFloat).clamp(-1, 1) * 32767.0).to(at::kShort).t().contiguous();
}

}  // namespace

#if DITGEN_FFMPEG

namespace {

// Frame i of [F, 3, H, W] as [H, W, 3] uint8 (float frames: round half to even, as PNGs are).
at::Tensor frame_rgb(const at::Tensor& frames, int64_t i) {
  if (frames.scalar_type() == at::kByte) return frames[i].to(at::kCPU).permute({1, 2, 0}).contiguous();
  return to_uint8_hwc(frames[i]);
}

std::string av_error(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof buf);
  return buf;
}

// FFmpeg prints its own progress and statistics at INFO level; keep its errors only.
void quiet_ffmpeg() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_level(AV_LOG_ERROR); });
}

// Owners for every FFmpeg object, so that each is released on every path.
template <typename T, void (*Free)(T**)>
struct FreeWith {
  void operator()(T* p) const { Free(&p); }
};
using CodecPtr = std::unique_ptr<AVCodecContext, FreeWith<AVCodecContext, avcodec_free_context>>;
using FramePtr = std::unique_ptr<AVFrame, FreeWith<AVFrame, av_frame_free>>;
using PacketPtr = std::unique_ptr<AVPacket, FreeWith<AVPacket, av_packet_free>>;
using SwrPtr = std::unique_ptr<SwrContext, FreeWith<SwrContext, swr_free>>;
struct SwsFree {
  void operator()(SwsContext* p) const { sws_freeContext(p); }
};
using SwsPtr = std::unique_ptr<SwsContext, SwsFree>;
struct Dict {
  AVDictionary* d = nullptr;
  ~Dict() { av_dict_free(&d); }
};

// An output file's muxer context; closes the file (if opened) and frees the context.
struct FileOutputFree {
  void operator()(AVFormatContext* f) const {
    if (f->pb) avio_closep(&f->pb);
    avformat_free_context(f);
  }
};
using FileOutputPtr = std::unique_ptr<AVFormatContext, FileOutputFree>;

// A muxer context writing to memory (avio_open_dyn_buf).
struct MemoryOutputFree {
  void operator()(AVFormatContext* f) const {
    if (f->pb) {
      uint8_t* buf = nullptr;
      avio_close_dyn_buf(f->pb, &buf);
      av_free(buf);
      f->pb = nullptr;
    }
    avformat_free_context(f);
  }
};
using MemoryOutputPtr = std::unique_ptr<AVFormatContext, MemoryOutputFree>;

// fps as the rational frame rate: integers exactly, NTSC rates as N*1000/1001 (23.976 -> 24000/1001).
AVRational frame_rate(double fps) {
  const double whole = std::round(fps);
  if (std::abs(fps - whole) < 1e-6) return {static_cast<int>(whole), 1};
  const double ntsc = std::round(fps * 1.001);
  if (std::abs(fps - ntsc / 1.001) < 1e-3) return {static_cast<int>(ntsc) * 1000, 1001};
  return av_d2q(fps, 100000);
}

struct OutStream {
  AVStream* stream = nullptr;
  CodecPtr enc;
  int64_t next_pts = 0;  // in enc->time_base
  bool done = false;
};

class Mp4Writer {
 public:
  explicit Mp4Writer(const std::string& path) : path_(path) {}

  void check(int ret, const char* stage) const {
    if (ret < 0) fail("cannot write the video '{}': {}: {}", path_, stage, av_error(ret));
  }
  template <typename P>
  P* check_alloc(P* p, const char* stage) const {
    if (!p) fail("cannot write the video '{}': {}: {}", path_, stage, av_error(AVERROR(ENOMEM)));
    return p;
  }

  void write(const at::Tensor& frames, double fps, const at::Tensor& audio, int sample_rate,
             const std::string& comment) {
    num_frames_ = frames.size(0);
    const int h = static_cast<int>(frames.size(2)), w = static_cast<int>(frames.size(3));
    AVFormatContext* fc = nullptr;
    // The container is named, not guessed: the temporary file name has no .mp4 extension.
    check(avformat_alloc_output_context2(&fc, nullptr, "mp4", path_.c_str()), "setting up the MP4 muxer");
    out_.reset(fc);

    open_video(w, h, frame_rate(fps));
    if (audio.defined()) {
      samples_ = audio_s16(audio);
      open_audio(sample_rate);
    } else {
      audio_.done = true;
    }

    if (!comment.empty()) check(av_dict_set(&fc->metadata, "comment", comment.c_str(), 0), "setting the metadata");
    check(avio_open(&fc->pb, path_.c_str(), AVIO_FLAG_WRITE), "opening the file");
    Dict opts;  // faststart: the index first, so that playback can start before the whole file is read
    check(av_dict_set(&opts.d, "movflags", "+faststart", 0), "setting the muxer options");
    check(avformat_write_header(fc, &opts.d), "writing the MP4 header");

    packet_.reset(check_alloc(av_packet_alloc(), "allocating a packet"));
    // Encode in presentation order across both streams, so the muxer interleaves without buffering.
    while (!video_.done || !audio_.done) {
      const bool video_next = !video_.done && (audio_.done || av_compare_ts(video_.next_pts, video_.enc->time_base,
                                                                            audio_.next_pts, audio_.enc->time_base) <= 0);
      if (video_next)
        video_step(frames);
      else
        audio_step();
    }
    check(av_write_trailer(fc), "writing the MP4 trailer");
    check(avio_closep(&fc->pb), "closing the file");
    const int fd = ::open(path_.c_str(), O_RDONLY);
    DITGEN_CHECK(fd >= 0 && ::fsync(fd) == 0, "cannot flush the video '{}' to disk: {}", path_, std::strerror(errno));
    DITGEN_CHECK(::close(fd) == 0, "cannot close the video '{}': {}", path_, std::strerror(errno));
  }

 private:
  void open_video(int w, int h, AVRational rate) {
    // libx264, as the reference; another H.264 encoder only where an FFmpeg build lacks it.
    const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
    if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_H264);
    DITGEN_CHECK(codec, "cannot write the video '{}': this FFmpeg has no H.264 encoder (libx264)", path_);
    video_.enc.reset(check_alloc(avcodec_alloc_context3(codec), "allocating the H.264 encoder"));
    AVCodecContext* enc = video_.enc.get();
    enc->width = w;
    enc->height = h;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = av_inv_q(rate);
    enc->framerate = rate;
    // libswscale's RGB -> YUV matrix is BT.601, limited range: say so, so that players invert the same one.
    enc->colorspace = AVCOL_SPC_SMPTE170M;
    enc->color_range = AVCOL_RANGE_MPEG;
    enc->thread_count = 0;  // as many encoder threads as the host has (the library's default is one)
    if (out_->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    check(avcodec_open2(enc, codec, nullptr), "opening the H.264 encoder");
    video_.stream = check_alloc(avformat_new_stream(out_.get(), nullptr), "adding the video stream");
    video_.stream->time_base = enc->time_base;
    video_.stream->avg_frame_rate = rate;
    check(avcodec_parameters_from_context(video_.stream->codecpar, enc), "setting the video stream parameters");

    sws_.reset(sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, AV_PIX_FMT_YUV420P, SWS_BICUBIC | SWS_ACCURATE_RND,
                              nullptr, nullptr, nullptr));
    DITGEN_CHECK(sws_, "cannot write the video '{}': cannot set up the RGB -> yuv420p conversion for {}x{}", path_, w, h);
    video_frame_.reset(check_alloc(av_frame_alloc(), "allocating a video frame"));
    video_frame_->format = AV_PIX_FMT_YUV420P;
    video_frame_->width = w;
    video_frame_->height = h;
    check(av_frame_get_buffer(video_frame_.get(), 0), "allocating a video frame");
  }

  void open_audio(int sample_rate) {
    const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_AAC);
    DITGEN_CHECK(codec, "cannot write the video '{}': this FFmpeg has no AAC encoder", path_);
    if (codec->supported_samplerates) {
      bool ok = false;
      for (const int* r = codec->supported_samplerates; *r; ++r) ok = ok || *r == sample_rate;
      DITGEN_CHECK(ok, "cannot write the video '{}': AAC does not support a sample rate of {} Hz", path_, sample_rate);
    }
    audio_.enc.reset(check_alloc(avcodec_alloc_context3(codec), "allocating the AAC encoder"));
    AVCodecContext* enc = audio_.enc.get();
    enc->sample_fmt = codec->sample_fmts ? codec->sample_fmts[0] : AV_SAMPLE_FMT_FLTP;
    enc->sample_rate = sample_rate;
    av_channel_layout_default(&enc->ch_layout, 2);
    enc->time_base = {1, sample_rate};
    if (out_->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    check(avcodec_open2(enc, codec, nullptr), "opening the AAC encoder");
    audio_.stream = check_alloc(avformat_new_stream(out_.get(), nullptr), "adding the audio stream");
    audio_.stream->time_base = enc->time_base;
    check(avcodec_parameters_from_context(audio_.stream->codecpar, enc), "setting the audio stream parameters");

    // Interleaved int16 stereo -> the encoder's sample format (planar float for FFmpeg's AAC).
    AVChannelLayout stereo;
    av_channel_layout_default(&stereo, 2);
    SwrContext* swr = nullptr;
    check(swr_alloc_set_opts2(&swr, &enc->ch_layout, enc->sample_fmt, sample_rate, &stereo, AV_SAMPLE_FMT_S16,
                              sample_rate, 0, nullptr),
          "setting up the audio conversion");
    swr_.reset(swr);
    check(swr_init(swr), "setting up the audio conversion");

    frame_size_ = enc->frame_size > 0 ? enc->frame_size : 1024;
    audio_frame_.reset(check_alloc(av_frame_alloc(), "allocating an audio frame"));
    audio_frame_->format = enc->sample_fmt;
    audio_frame_->sample_rate = sample_rate;
    audio_frame_->nb_samples = frame_size_;
    check(av_channel_layout_copy(&audio_frame_->ch_layout, &enc->ch_layout), "allocating an audio frame");
    check(av_frame_get_buffer(audio_frame_.get(), 0), "allocating an audio frame");
  }

  void video_step(const at::Tensor& frames) {
    if (video_.next_pts == num_frames_) {
      encode(video_, nullptr);
      video_.done = true;
      return;
    }
    AVFrame* f = video_frame_.get();
    check(av_frame_make_writable(f), "preparing a video frame");
    const at::Tensor rgb = frame_rgb(frames, video_.next_pts);  // [H, W, 3] uint8
    const uint8_t* src[1] = {rgb.data_ptr<uint8_t>()};
    const int src_stride[1] = {static_cast<int>(3 * f->width)};
    DITGEN_CHECK(sws_scale(sws_.get(), src, src_stride, 0, f->height, f->data, f->linesize) == f->height,
                 "cannot write the video '{}': converting frame {} to yuv420p failed", path_, video_.next_pts);
    f->pts = video_.next_pts++;
    encode(video_, f);
  }

  void audio_step() {
    const int64_t total = samples_.size(0), offset = audio_.next_pts;
    if (offset == total) {
      encode(audio_, nullptr);
      audio_.done = true;
      return;
    }
    const int n = static_cast<int>(std::min<int64_t>(frame_size_, total - offset));
    AVFrame* f = audio_frame_.get();
    f->nb_samples = frame_size_;  // the buffer size av_frame_make_writable allocates
    check(av_frame_make_writable(f), "preparing an audio frame");
    const uint8_t* in[1] = {reinterpret_cast<const uint8_t*>(samples_.data_ptr<int16_t>() + 2 * offset)};
    const int got = swr_convert(swr_.get(), f->data, frame_size_, in, n);
    check(got, "converting the audio samples");
    DITGEN_CHECK(got == n, "cannot write the video '{}': the audio conversion returned {} of {} samples", path_, got, n);
    f->nb_samples = n;
    // An encoder that takes only full frames gets the last one padded with silence.
    if (n < frame_size_ && !(audio_.enc->codec->capabilities & AV_CODEC_CAP_SMALL_LAST_FRAME)) {
      check(av_samples_set_silence(f->data, n, frame_size_ - n, f->ch_layout.nb_channels,
                                   static_cast<AVSampleFormat>(f->format)),
            "padding the last audio frame");
      f->nb_samples = frame_size_;
    }
    f->pts = offset;
    audio_.next_pts += n;
    encode(audio_, f);
  }

  // Sends one frame (nullptr: flush) and writes every packet the encoder has ready.
  void encode(OutStream& s, const AVFrame* frame) {
    const bool video = &s == &video_;
    check(avcodec_send_frame(s.enc.get(), frame), video ? "encoding a video frame" : "encoding audio");
    AVPacket* pkt = packet_.get();
    for (;;) {
      const int ret = avcodec_receive_packet(s.enc.get(), pkt);
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
      check(ret, video ? "encoding a video frame" : "encoding audio");
      av_packet_rescale_ts(pkt, s.enc->time_base, s.stream->time_base);
      pkt->stream_index = s.stream->index;
      check(av_interleaved_write_frame(out_.get(), pkt), "writing a packet");  // takes the packet's data
    }
  }

  std::string path_;
  FileOutputPtr out_;
  OutStream video_, audio_;
  SwsPtr sws_;
  SwrPtr swr_;
  FramePtr video_frame_, audio_frame_;
  PacketPtr packet_;
  at::Tensor samples_;  // [S, 2] int16
  int64_t num_frames_ = 0;
  int frame_size_ = 0;
};

}  // namespace

bool mp4_supported() { return true; }

std::string ffmpeg_version() {
  const unsigned v = avcodec_version();
  return fmt::format("{} (libavcodec {}.{}.{})", av_version_info(), v >> 16, (v >> 8) & 0xff, v & 0xff);
}

void write_mp4(const std::string& path, const at::Tensor& frames, double fps, const at::Tensor& audio,
               int sample_rate, const std::string& comment) {
  DITGEN_CHECK(frames.defined() && frames.dim() == 4 && frames.size(1) == 3 && frames.size(0) > 0,
               "cannot write the video '{}': expected frames [F, 3, H, W] with F > 0, got {}", path,
               shape_of(frames));
  DITGEN_CHECK(frames.scalar_type() == at::kByte || at::isFloatingType(frames.scalar_type()),
               "cannot write the video '{}': frames must be uint8 or float in [0, 1]", path);
  const int64_t h = frames.size(2), w = frames.size(3);
  DITGEN_CHECK(h > 0 && w > 0 && h % 2 == 0 && w % 2 == 0,
               "cannot write the video '{}': H.264 yuv420p needs an even width and height, got {}x{} (W x H)", path,
               w, h);
  DITGEN_CHECK(std::isfinite(fps) && fps > 0 && fps <= 1000, "cannot write the video '{}': bad frame rate {}", path,
               fps);
  if (audio.defined())
    DITGEN_CHECK(sample_rate > 0, "cannot write the video '{}': bad audio sample rate {}", path, sample_rate);
  quiet_ffmpeg();
  Mp4Writer(path).write(frames, fps, audio, sample_rate, comment);
}

at::Tensor h264_roundtrip(const at::Tensor& hwc, int crf) {
  DITGEN_CHECK(hwc.dim() == 3 && hwc.size(2) == 3 && hwc.scalar_type() == at::kByte,
               "--image-crf: expected an image [H, W, 3] uint8, got {}", shape_of(hwc));
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  DITGEN_CHECK(h > 0 && w > 0 && h % 2 == 0 && w % 2 == 0,
               "--image-crf: H.264 yuv420p needs an even width and height, got {}x{} (W x H)", w, h);
  DITGEN_CHECK(crf >= 1 && crf <= 51, "--image-crf: CRF must be 1..51 (0 is no re-encoding), got {}", crf);
  quiet_ffmpeg();
  auto check = [](int err, const char* what) {
    DITGEN_CHECK(err >= 0, "--image-crf: {} failed: {}", what, av_error(err));
  };
  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  DITGEN_CHECK(codec,
               "--image-crf: this FFmpeg has no libx264 encoder; pass --image-crf 0 to use the image as is");
  CodecPtr enc(avcodec_alloc_context3(codec));
  DITGEN_CHECK(enc, "--image-crf: cannot allocate the H.264 encoder");
  enc->width = w;
  enc->height = h;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = AVRational{1, 1};
  enc->thread_count = 1;  // one thread: the same bytes on every rank
  Dict opts;
  av_dict_set(&opts.d, "crf", std::to_string(crf).c_str(), 0);
  av_dict_set(&opts.d, "preset", "veryfast", 0);
  check(avcodec_open2(enc.get(), codec, &opts.d), "opening the H.264 encoder");

  const AVCodec* dcodec = avcodec_find_decoder(AV_CODEC_ID_H264);
  DITGEN_CHECK(dcodec,
               "--image-crf: this FFmpeg has no H.264 decoder; pass --image-crf 0 to use the image as is");
  CodecPtr dec(avcodec_alloc_context3(dcodec));
  DITGEN_CHECK(dec, "--image-crf: cannot allocate the H.264 decoder");
  dec->thread_count = 1;
  check(avcodec_open2(dec.get(), dcodec, nullptr), "opening the H.264 decoder");

  // RGB -> yuv420p and back with swscale's bilinear filter, as PyAV's frame conversions do by default.
  SwsPtr to_yuv(sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, AV_PIX_FMT_YUV420P, SWS_BILINEAR, nullptr,
                               nullptr, nullptr));
  DITGEN_CHECK(to_yuv, "--image-crf: cannot set up the RGB -> yuv420p conversion for {}x{}", w, h);
  FramePtr frame(av_frame_alloc());
  DITGEN_CHECK(frame, "--image-crf: cannot allocate a frame");
  frame->format = AV_PIX_FMT_YUV420P;
  frame->width = w;
  frame->height = h;
  frame->pts = 0;
  check(av_frame_get_buffer(frame.get(), 0), "allocating a frame");
  const at::Tensor rgb = hwc.to(at::kCPU).contiguous();
  const uint8_t* src[1] = {rgb.data_ptr<uint8_t>()};
  const int src_stride[1] = {3 * w};
  sws_scale(to_yuv.get(), src, src_stride, 0, h, frame->data, frame->linesize);

  // Encode the one frame, flush, and feed every packet to the decoder; keep the decoded frame.
  PacketPtr pkt(av_packet_alloc());
  FramePtr decoded(av_frame_alloc());
  DITGEN_CHECK(pkt && decoded, "--image-crf: cannot allocate a packet");
  bool got = false;
  auto receive_frame = [&] {  // one frame in, one out
    const int r = avcodec_receive_frame(dec.get(), decoded.get());
    if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return;
    check(r, "decoding the H.264 frame");
    got = true;
  };
  check(avcodec_send_frame(enc.get(), frame.get()), "encoding the image");
  check(avcodec_send_frame(enc.get(), nullptr), "flushing the H.264 encoder");
  for (;;) {
    const int r = avcodec_receive_packet(enc.get(), pkt.get());
    if (r == AVERROR_EOF) break;
    check(r, "encoding the image");
    check(avcodec_send_packet(dec.get(), pkt.get()), "decoding the H.264 frame");
    av_packet_unref(pkt.get());
    if (!got) receive_frame();
  }
  if (!got) {
    check(avcodec_send_packet(dec.get(), nullptr), "flushing the H.264 decoder");
    receive_frame();
  }
  DITGEN_CHECK(got, "--image-crf: the H.264 decoder returned no frame for the encoded image");

  SwsPtr to_rgb(sws_getContext(w, h, static_cast<AVPixelFormat>(decoded->format), w, h, AV_PIX_FMT_RGB24,
                               SWS_BILINEAR, nullptr, nullptr, nullptr));
  DITGEN_CHECK(to_rgb, "--image-crf: cannot set up the yuv420p -> RGB conversion for {}x{}", w, h);
  at::Tensor out = at::empty({h, w, 3}, at::kByte);
  uint8_t* dst[1] = {out.data_ptr<uint8_t>()};
  const int dst_stride[1] = {3 * w};
  sws_scale(to_rgb.get(), decoded->data, decoded->linesize, 0, h, dst, dst_stride);
  return out;
}

std::string wav_bytes(const at::Tensor& audio, int sample_rate) {
  DITGEN_CHECK(sample_rate > 0, "cannot write WAV audio at a sample rate of {} Hz", sample_rate);
  const at::Tensor s16 = audio_s16(audio);  // [S, 2]
  quiet_ffmpeg();
  auto check = [](int ret, const char* stage) {
    if (ret < 0) fail("cannot encode the WAV audio: {}: {}", stage, av_error(ret));
  };
  AVFormatContext* fc = nullptr;
  check(avformat_alloc_output_context2(&fc, nullptr, "wav", nullptr), "setting up the WAV muxer");
  MemoryOutputPtr out(fc);
  fc->flags |= AVFMT_FLAG_BITEXACT;  // no LIST/INFO chunk: the plain 44-byte header
  AVStream* st = avformat_new_stream(fc, nullptr);
  if (!st) check(AVERROR(ENOMEM), "adding the audio stream");
  AVCodecParameters* par = st->codecpar;
  par->codec_type = AVMEDIA_TYPE_AUDIO;
  par->codec_id = AV_CODEC_ID_PCM_S16LE;
  par->sample_rate = sample_rate;
  av_channel_layout_default(&par->ch_layout, 2);
  par->bits_per_coded_sample = 16;
  par->block_align = 4;
  par->bit_rate = int64_t{sample_rate} * 32;
  check(avio_open_dyn_buf(&fc->pb), "opening the memory buffer");  // seekable: the trailer fills in the sizes
  check(avformat_write_header(fc, nullptr), "writing the WAV header");

  PacketPtr pkt(av_packet_alloc());
  if (!pkt) check(AVERROR(ENOMEM), "allocating a packet");
  const int64_t bytes = s16.numel() * 2;
  DITGEN_CHECK(bytes < INT32_MAX, "cannot write WAV audio of {} samples (over 2 GiB)", s16.size(0));
  check(av_new_packet(pkt.get(), static_cast<int>(bytes)), "allocating a packet");
  std::memcpy(pkt->data, s16.data_ptr<int16_t>(), static_cast<size_t>(bytes));
  pkt->pts = pkt->dts = 0;
  pkt->duration = av_rescale_q(s16.size(0), AVRational{1, sample_rate}, st->time_base);
  pkt->stream_index = st->index;
  check(av_write_frame(fc, pkt.get()), "writing the samples");
  check(av_write_trailer(fc), "writing the WAV trailer");

  uint8_t* buf = nullptr;
  const int size = avio_close_dyn_buf(fc->pb, &buf);
  fc->pb = nullptr;
  std::string result(reinterpret_cast<const char*>(buf), static_cast<size_t>(size > 0 ? size : 0));
  av_free(buf);
  return result;
}

#else  // !DITGEN_FFMPEG

bool mp4_supported() { return false; }

std::string ffmpeg_version() { return "not built in (-DDITGEN_FFMPEG=OFF: no MP4 output)"; }

at::Tensor h264_roundtrip(const at::Tensor&, int crf) {
  fail(
      "--image-crf {}: this ditgen was built without FFmpeg's libraries (-DDITGEN_FFMPEG=OFF), so it cannot "
      "re-encode the image as an H.264 frame; pass --image-crf 0 to use the image as is, or rebuild after "
      "scripts/setup.sh",
      crf);
}

void write_mp4(const std::string& path, const at::Tensor&, double, const at::Tensor&, int, const std::string&) {
  fail("cannot write the video '{}': this ditgen was built without FFmpeg's libraries (-DDITGEN_FFMPEG=OFF); "
       "pass --save-frames for PNG frames and a WAV, or rebuild after scripts/setup.sh",
       path);
}

// Without FFmpeg, the canonical 44-byte header (RIFF, fmt with PCM s16 stereo, data) by hand.
std::string wav_bytes(const at::Tensor& audio, int sample_rate) {
  DITGEN_CHECK(sample_rate > 0, "cannot write WAV audio at a sample rate of {} Hz", sample_rate);
  const at::Tensor s16 = audio_s16(audio);  // [S, 2]
  const int64_t data = s16.numel() * 2;
  DITGEN_CHECK(data + 36 <= UINT32_MAX, "cannot write WAV audio of {} samples (over 4 GiB)", s16.size(0));
  std::string out;
  auto u32 = [&](uint32_t v) { for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff)); };
  auto u16 = [&](uint16_t v) { for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff)); };
  out += "RIFF";
  u32(static_cast<uint32_t>(36 + data));
  out += "WAVEfmt ";
  u32(16);
  u16(1);  // PCM
  u16(2);
  u32(static_cast<uint32_t>(sample_rate));
  u32(static_cast<uint32_t>(sample_rate) * 4);
  u16(4);
  u16(16);
  out += "data";
  u32(static_cast<uint32_t>(data));
  out.append(reinterpret_cast<const char*>(s16.data_ptr<int16_t>()), static_cast<size_t>(data));  // little-endian host
  return out;
}

#endif

}  // namespace ditgen::io

#pragma once
// Choices every generate command shares: device and dtype, image-size checks, output names that
// carry the configuration (cache-dit style: flux2.1024x1024.C0_Ulysses4_TP2.png).
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lib/comm/mesh.h"
#include "lib/pipeline/prompt_file.h"
#include "lib/pipeline/request.h"

namespace ditgen::pipeline {

// --device / --dtype: "auto" picks the rank's GPU (rank % visible GPUs) with bf16 when the build
// has CUDA and a GPU is present, else the CPU with fp32.
std::pair<at::Device, at::ScalarType> resolve_device(const std::string& device, const std::string& dtype, int rank);
std::string device_description(const at::Device& device, int world);

// Fails with the nearest valid sizes when height or width is not a positive multiple of `multiple`.
void check_image_size(int64_t height, int64_t width, int64_t multiple);

// "C0" (+ "_" + cache tag + "_" + calibrator tag) + "_" + mesh tag (+ "_TEP" with the text encoder
// tensor-parallel, + "_VAEP" with the VAE decode spread over the ranks) (+ "_S" + cached steps): the
// configuration part of output names, as cache-dit-semantics.md §6.3 (flux2.1024x1024.C0_Ulysses4_TP2_TEP.png,
// flux2.1024x1024.C0_DBCache_F1B0_W8I1M0MC3_R0.12_T0O0_S9.png). `cache` is the model's cache_report()
// (null with the cache off).
std::string run_tag(const comm::Mesh& mesh, const nlohmann::json& cache = nullptr, bool parallel_text = false,
                    bool parallel_vae = false);

// mkdir -p.
void make_dirs(const std::string& dir);

struct OutputPaths {
  std::vector<std::string> files;  // one per batch item: the image (.png) or the video (.mp4)
  std::vector<std::string> stems;  // the same without the extension (for a video's .frames/ and .wav)
  std::string report;              // the JSON report
};
// Whether --output names a file (a name with an extension that is not an existing folder) rather than a
// folder, as output_paths decides.
bool output_names_file(const std::string& output);

// `output` empty: the current folder; a name ending in `.{ext}` ("png" or "mp4"): that file (batch items
// get _0, _1, ...); a name with another extension is refused; otherwise a folder (created if missing)
// that receives "{model}.{H}x{W}.{tag}.png", or "{model}.{H}x{W}x{frames}.{tag}.mp4" for videos
// (frames > 0), as the reference tool names them.
OutputPaths output_paths(const std::string& output, const std::string& model, int64_t height, int64_t width,
                         int64_t frames, const std::string& tag, int64_t batch, const std::string& ext = "png");

// Before any work: the output name is valid for `ext` and its folder (created if missing) accepts a new
// file; otherwise fails naming --output, the folder and the reason.
void check_output_writable(const std::string& output, const std::string& ext);

// ---- every file a launch writes, checked before the first item runs (issue 22) ----

// `path` as the file system will see it: absolute, with '.', '..' and repeated '/' resolved and the
// symlinks of its folders followed as far as they exist (the rest is resolved by name). The last
// component is kept as written: a rename into place replaces a symlink there rather than following it.
std::string normalized_path(const std::string& path);

// One file a launch writes or reads, and who named it (for messages).
struct LaunchFile {
  std::string path;
  std::string source;     // "--prompt-file p.jsonl line 3", "--output", "the prompt-file summary", ...
  bool wildcard = false;  // the first '*' of the file name stands for a part known only after the run
};

// run_tag for names planned before the run: with the cache on, the cache part (and the cached-step count
// that follows the mesh part) is known only afterwards, so everything after "C0_" becomes the wildcard
// "*" (run_tag(...) without the cache otherwise).
std::string run_tag_pattern(const comm::Mesh& mesh, bool cache_on, bool parallel_text = false,
                            bool parallel_vae = false);

// The files one generation writes, named as output_paths names them: each image or video, the report,
// and for videos with `save_frames` each item's ".frames" folder and ".wav". `tag` may come from
// run_tag_pattern; then the auto-named files carry the wildcard. Creates the output folder like
// output_paths.
std::vector<LaunchFile> planned_outputs(const std::string& output, const std::string& model, int64_t height,
                                        int64_t width, int64_t frames, const std::string& tag, int64_t batch,
                                        const std::string& ext, bool save_frames, const std::string& source);

// Fails, naming both sources and the path, when two outputs are the same file after normalized_path (a
// wildcard matches any characters but '/'), or an output is one of `inputs` (compared by normalized path,
// by real path, and by device and inode where the output exists). Linear in the number of files for the
// names output_paths makes.
void check_launch_files(const std::vector<LaunchFile>& outputs, const std::vector<LaunchFile>& inputs);

// Where a prompt file's summary goes: --output's folder (the current one by default), named after the
// prompt file ("items.jsonl" -> "items.summary.json").
std::string prompt_file_summary_path(const std::string& output, const std::string& prompt_file);

// Before anything loads: the files a prompt file's items name themselves (their "output", or --output
// when it names one file), with their reports and the summary, checked by check_launch_files against
// each other and against the prompt file. Auto-named outputs need the loaded model's name and the run's
// tag; the runner checks the whole list (planned_outputs + check_launch_files) once it knows them.
void check_named_outputs(const std::vector<PromptItem>& items, const std::string& output,
                         const std::string& prompt_file, const std::string& ext, int64_t batch, bool save_frames);

}  // namespace ditgen::pipeline

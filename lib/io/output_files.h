#pragma once
// Output files that appear complete or not at all. Each file is written under a temporary name in its
// own folder (every write checked, then fsync and a checked close); commit() renames them all into
// place. If a write fails, or the set is destroyed before commit() (an error anywhere in the job), the
// temporary files are removed and nothing new appears under the final names.
#include <string>
#include <utility>
#include <vector>

namespace ditgen::io {

class OutputFiles {
 public:
  OutputFiles() = default;
  OutputFiles(const OutputFiles&) = delete;
  OutputFiles& operator=(const OutputFiles&) = delete;
  ~OutputFiles();

  // Writes `bytes` to a temporary file next to `path` (checked, fsynced). Throws ditgen::Error naming
  // the file and the reason (e.g. no space left on the device).
  void add(const std::string& path, const std::string& bytes);
  // For writers that need a file name (FFmpeg): creates the temporary file for `path` and returns its
  // name; the caller writes it completely (and checks every step), then commit() renames it like the rest.
  std::string add_path(const std::string& path);
  // Renames every file into place, in the order added. If a rename fails, the ones already renamed are
  // removed again before the error is thrown.
  void commit();

 private:
  std::vector<std::pair<std::string, std::string>> files_;  // (temporary, final)
  bool committed_ = false;
};

// A folder written as a whole: everything goes into a staging folder next to `dir`, and commit() moves
// it into place. A non-empty `dir` is refused before anything is written unless `replace` is set, in
// which case commit() swaps the old folder out and removes it (no stale files survive). Destroyed
// without commit(), the staging folder is removed.
class OutputFolder {
 public:
  OutputFolder(const std::string& dir, bool replace);
  OutputFolder(const OutputFolder&) = delete;
  OutputFolder& operator=(const OutputFolder&) = delete;
  ~OutputFolder();
  const std::string& path() const { return staging_; }  // write here
  void commit();

 private:
  std::string dir_, staging_;
  bool replace_, committed_ = false;
};

// One file through an OutputFiles set.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace ditgen::io

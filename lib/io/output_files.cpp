#include "lib/io/output_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "lib/runtime/error.h"

namespace ditgen::io {

namespace {

// Temporary files in flight, for the signal handler: a job ended from outside (mpirun terminating the
// ranks after a peer failed, Ctrl-C) must not leave them behind either. Fixed slots of heap copies,
// so that the handler only reads memory and calls unlink(2), which is async-signal-safe.
constexpr int kSlots = 256;
std::atomic<const char*> g_temps[kSlots];

void remove_temps_and_reraise(int sig) {
  for (auto& slot : g_temps)
    if (const char* p = slot.load()) ::unlink(p);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void track(const std::string& tmp) {
  static const bool installed = [] {
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::signal(sig, remove_temps_and_reraise);
    return true;
  }();
  (void)installed;
  const char* copy = ::strdup(tmp.c_str());
  for (auto& slot : g_temps) {
    const char* expected = nullptr;
    if (slot.compare_exchange_strong(expected, copy)) return;
  }
  std::free(const_cast<char*>(copy));  // all slots busy: the destructor still removes it
}

void untrack(const std::string& tmp) {
  for (auto& slot : g_temps) {
    const char* p = slot.load();
    if (p && tmp == p && slot.compare_exchange_strong(p, nullptr)) {
      std::free(const_cast<char*>(p));
      return;
    }
  }
}

std::string folder_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

// Every byte or an error: write(2) may write less than asked, and reports a full disk (ENOSPC) or a
// file-size limit (EFBIG; SIGXFSZ is ignored at start-up) as errors.
void write_all(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    DITGEN_CHECK(n > 0, "cannot write '{}' ({} of {} bytes written): {}", path, done, bytes.size(),
                 n < 0 ? std::strerror(errno) : "no progress");
    done += static_cast<size_t>(n);
  }
}

}  // namespace

OutputFiles::~OutputFiles() {
  for (const auto& f : files_) {
    if (!committed_) ::unlink(f.first.c_str());
    untrack(f.first);
  }
}

namespace {
// A fresh temporary file next to `path`, owned by `files` from here on (the destructor or a terminating
// signal removes it). Returns its descriptor.
int create_temp(std::vector<std::pair<std::string, std::string>>& files, const std::string& path) {
  std::string tmp = path + ".partial.XXXXXX";
  const int fd = ::mkstemp(&tmp[0]);
  DITGEN_CHECK(fd >= 0, "cannot create a file in '{}' for '{}': {}", folder_of(path), path, std::strerror(errno));
  files.emplace_back(tmp, path);
  track(tmp);
  // mkstemp makes the file private; give it the permissions a plain create would (0666 minus umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, 0666 & ~mask) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    fail("cannot set the permissions of '{}': {}", path, why);
  }
  return fd;
}
}  // namespace

std::string OutputFiles::add_path(const std::string& path) {
  DITGEN_CHECK(!committed_, "output files already committed");
  const int fd = create_temp(files_, path);
  DITGEN_CHECK(::close(fd) == 0, "cannot close '{}': {}", path, std::strerror(errno));
  return files_.back().first;
}

void OutputFiles::add(const std::string& path, const std::string& bytes) {
  DITGEN_CHECK(!committed_, "output files already committed");
  const int fd = create_temp(files_, path);
  try {
    write_all(fd, bytes, path);
    DITGEN_CHECK(::fsync(fd) == 0, "cannot flush '{}' to disk: {}", path, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  DITGEN_CHECK(::close(fd) == 0, "cannot close '{}': {}", path, std::strerror(errno));
}

void OutputFiles::commit() {
  for (size_t i = 0; i < files_.size(); ++i) {
    if (std::rename(files_[i].first.c_str(), files_[i].second.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      for (size_t j = 0; j < i; ++j) ::unlink(files_[j].second.c_str());  // all or nothing
      fail("cannot move the finished '{}' into place: {}", files_[i].second, why);
    }
  }
  committed_ = true;
  // Make the renames themselves durable (best effort: some file systems refuse fsync on folders).
  for (const auto& f : files_) {
    const int dir = ::open(folder_of(f.second).c_str(), O_RDONLY | O_DIRECTORY);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  }
}

OutputFolder::OutputFolder(const std::string& dir, bool replace) : dir_(dir), replace_(replace) {
  namespace fs = std::filesystem;
  std::error_code ec;
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  // A symlink to a folder (a model folder kept on another disk): the folder it points to is the one
  // written and replaced, and the link stays. Renaming the link itself aside failed and left an empty
  // DIR.old.XXXXXX behind.
  if (fs::is_symlink(dir_, ec)) {
    const fs::path target = fs::canonical(dir_, ec);
    DITGEN_CHECK(!ec, "'{}' is a symlink that leads nowhere ({}); remove it or point it at a folder", dir_,
                 ec.message());
    dir_ = target.string();
  }
  if (fs::exists(dir_, ec)) {
    DITGEN_CHECK(fs::is_directory(dir_, ec), "'{}' exists and is not a folder", dir_);
    DITGEN_CHECK(replace_ || fs::is_empty(dir_, ec),
                 "'{}' is not empty: choose a new folder, or pass --replace to replace its contents", dir_);
  }
  const fs::path parent = fs::path(dir_).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    DITGEN_CHECK(!ec, "cannot create the folder '{}': {}", parent.string(), ec.message());
  }
  staging_ = dir_ + ".partial.XXXXXX";
  DITGEN_CHECK(::mkdtemp(&staging_[0]) != nullptr, "cannot create a folder next to '{}': {}", dir_,
               std::strerror(errno));
}

OutputFolder::~OutputFolder() {
  std::error_code ec;
  if (!committed_) std::filesystem::remove_all(staging_, ec);
}

void OutputFolder::commit() {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string old;
  if (fs::exists(dir_, ec)) {  // empty, or replaced on request: move it aside first
    old = dir_ + ".old.XXXXXX";
    DITGEN_CHECK(::mkdtemp(&old[0]) != nullptr, "cannot create a folder next to '{}': {}", dir_,
                 std::strerror(errno));
    if (std::rename(dir_.c_str(), old.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      ::rmdir(old.c_str());  // nothing may stay behind
      fail("cannot move the old '{}' aside: {}", dir_, why);
    }
  }
  if (std::rename(staging_.c_str(), dir_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    if (!old.empty()) std::rename(old.c_str(), dir_.c_str());
    fail("cannot move the finished folder into '{}': {}", dir_, why);
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  OutputFiles out;
  out.add(path, bytes);
  out.commit();
}

}  // namespace ditgen::io

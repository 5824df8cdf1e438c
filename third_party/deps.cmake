# Finds every third-party dependency. Order per dependency: the system package (Debian 12), then a
# -D<DEP>_ROOT folder of headers. No third-party source lives in this repository.

find_package(Torch REQUIRED)           # Debian libtorch-dev (CPU) or a CUDA PyTorch's LibTorch
find_package(MPI REQUIRED COMPONENTS C)
find_package(ZLIB REQUIRED)            # -DZLIB_INCLUDE_DIR / -DZLIB_LIBRARY where no -dev package exists
# OpenSSL's libcrypto: SHA-256 of input images (-DOPENSSL_INCLUDE_DIR / -DOPENSSL_CRYPTO_LIBRARY where no -dev
# package exists, e.g. the headers of a bundle and the system's libcrypto.so.3)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)

# nlohmann-json (header-only)
find_package(nlohmann_json 3 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_path(NLOHMANN_JSON_INCLUDE_DIR nlohmann/json.hpp HINTS ${NLOHMANN_JSON_ROOT} ${NLOHMANN_JSON_ROOT}/include REQUIRED)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  target_include_directories(nlohmann_json::nlohmann_json INTERFACE ${NLOHMANN_JSON_INCLUDE_DIR})
endif()

# {fmt}: the Debian library, or headers in header-only mode. CUDA builds always go header-only:
# LibTorch ships its own fmt headers (first on the include path) but not their library.
if(NOT DITGEN_CUDA)
  find_package(fmt QUIET)
endif()
if(TARGET fmt::fmt AND NOT DITGEN_CUDA)
  add_library(ditgen_fmt INTERFACE)
  target_link_libraries(ditgen_fmt INTERFACE fmt::fmt)
else()
  find_path(FMT_INCLUDE_DIR fmt/format.h HINTS ${FMT_ROOT} ${FMT_ROOT}/include REQUIRED)
  add_library(ditgen_fmt INTERFACE)
  target_include_directories(ditgen_fmt INTERFACE ${FMT_INCLUDE_DIR})
  add_compile_definitions(FMT_HEADER_ONLY=1)
endif()

# spdlog (logging): the Debian library (libspdlog-dev 1.10, built against Debian's fmt 9), else its headers
# alone: -DSPDLOG_ROOT (scripts/gpu_bundle.sh copies /usr/include/spdlog into .gpu/include) or the system's.
# CUDA builds always go header-only (spdlog's mode whenever SPDLOG_COMPILED_LIB is undefined; it then
# defines SPDLOG_HEADER_ONLY itself, so we do not) with SPDLOG_FMT_EXTERNAL: spdlog formats with the fmt
# above, which there is LibTorch's bundled copy (PyTorch 2.11 ships fmt 12.1.0). spdlog before 1.12 does
# not compile with fmt 10 or newer, and what it needs is spdlog 1.12's own fix, two spots: fmt 10 renamed
# `basic_runtime` to `runtime_format_string` (common.h), and fmt 10's make_format_args takes lvalues only, so
# `make_format_args(std::forward<Args>(args)...)` fails for temporaries such as spdlog::info("{}", v.size())
# (logger.h). For an older spdlog the headers are therefore copied into the build folder with exactly that
# fix (right for fmt 9 too: the alias picks the name by FMT_VERSION, as in 1.12). Nothing else is changed;
# spdlog 1.10's other headers compile with fmt 11.2, 12.0 and 12.1. The alternatives were worse: Debian's
# fmt 9 ahead of LibTorch's on the include path would change the fmt that LibTorch's own headers see, and
# spdlog's std::format mode needs C++20.
if(NOT DITGEN_CUDA)
  find_package(spdlog QUIET)
endif()
add_library(ditgen_spdlog INTERFACE)
if(TARGET spdlog::spdlog AND NOT DITGEN_CUDA)
  target_link_libraries(ditgen_spdlog INTERFACE spdlog::spdlog)
else()
  find_path(SPDLOG_INCLUDE_DIR spdlog/spdlog.h HINTS ${SPDLOG_ROOT} ${SPDLOG_ROOT}/include)
  if(NOT SPDLOG_INCLUDE_DIR)
    message(FATAL_ERROR "spdlog not found: apt-get install libspdlog-dev (scripts/setup.sh), or pass -DSPDLOG_ROOT=<folder with spdlog/spdlog.h>")
  endif()
  file(STRINGS ${SPDLOG_INCLUDE_DIR}/spdlog/version.h spdlog_ver REGEX "#define SPDLOG_VER_(MAJOR|MINOR) ")
  string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*" "\\1.\\2" spdlog_ver "${spdlog_ver}")
  set(spdlog_include ${SPDLOG_INCLUDE_DIR})
  if(spdlog_ver VERSION_LESS 1.12)
    # (Rewritten only when different: a re-configure must not rebuild everything.)
    set(spdlog_include ${CMAKE_BINARY_DIR}/third_party/spdlog_fmt10)
    file(COPY ${SPDLOG_INCLUDE_DIR}/spdlog DESTINATION ${spdlog_include} REGEX "/spdlog/(common|logger)\\.h$" EXCLUDE)
    set(common ${spdlog_include}/spdlog/common.h)
    set(logger ${spdlog_include}/spdlog/logger.h)
    file(READ ${SPDLOG_INCLUDE_DIR}/spdlog/common.h text)
    string(REPLACE "fmt::basic_runtime<Char>>::value" "fmt_runtime_string<Char>>::value" text "${text}")
    string(REPLACE "namespace fmt_lib = fmt;\n"
                   "namespace fmt_lib = fmt;\n#if FMT_VERSION >= 90101 // ditgen: spdlog 1.12's fix for fmt 10\ntemplate<typename Char>\nusing fmt_runtime_string = fmt::runtime_format_string<Char>;\n#else\ntemplate<typename Char>\nusing fmt_runtime_string = fmt::basic_runtime<Char>;\n#endif\n"
                   text "${text}")
    file(WRITE ${spdlog_include}/common.h.new "${text}")
    configure_file(${spdlog_include}/common.h.new ${common} COPYONLY)
    file(READ ${SPDLOG_INCLUDE_DIR}/spdlog/logger.h text)
    string(REPLACE "make_format_args(std::forward<Args>(args)...)" "make_format_args(args...)" text "${text}")
    string(REPLACE "make_format_args<fmt::wformat_context>(std::forward<Args>(args)...)"
                   "make_format_args<fmt::wformat_context>(args...)" text "${text}")
    file(WRITE ${spdlog_include}/logger.h.new "${text}")
    configure_file(${spdlog_include}/logger.h.new ${logger} COPYONLY)
    file(STRINGS ${common} left REGEX "basic_runtime<Char>>::value")
    file(STRINGS ${logger} left2 REGEX "make_format_args.*std::forward")
    file(STRINGS ${common} fixed REGEX "using fmt_runtime_string = fmt::runtime_format_string")
    if(left OR left2 OR NOT fixed)
      message(FATAL_ERROR "spdlog ${spdlog_ver} in ${SPDLOG_INCLUDE_DIR}: its fmt 10 fix did not apply (not Debian's 1.10?)")
    endif()
    message(STATUS "spdlog ${spdlog_ver}: header-only, with spdlog 1.12's fmt 10 fix in ${spdlog_include}")
  endif()
  target_include_directories(ditgen_spdlog INTERFACE ${spdlog_include})
  target_compile_definitions(ditgen_spdlog INTERFACE SPDLOG_FMT_EXTERNAL=1)
  find_package(Threads REQUIRED)
  target_link_libraries(ditgen_spdlog INTERFACE ditgen_fmt Threads::Threads)
endif()

# CLI11 (header-only)
find_package(CLI11 CONFIG QUIET)
if(NOT TARGET CLI11::CLI11)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp HINTS ${CLI11_ROOT} ${CLI11_ROOT}/include REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()

# stb_image_write (header-only)
find_path(STB_INCLUDE_DIR stb_image_write.h HINTS ${STB_ROOT} PATH_SUFFIXES stb REQUIRED)
add_library(stb::stb INTERFACE IMPORTED)
target_include_directories(stb::stb INTERFACE ${STB_INCLUDE_DIR})

# utf8proc: NFC normalisation and Unicode categories for the tokenizer
find_path(UTF8PROC_INCLUDE_DIR utf8proc.h HINTS ${UTF8PROC_ROOT} ${UTF8PROC_ROOT}/include)
find_library(UTF8PROC_LIBRARY utf8proc HINTS ${UTF8PROC_ROOT} ${UTF8PROC_ROOT}/lib)
if(NOT UTF8PROC_INCLUDE_DIR OR NOT UTF8PROC_LIBRARY)
  message(FATAL_ERROR "utf8proc not found: apt-get install libutf8proc-dev, or pass -DUTF8PROC_ROOT=<prefix>")
endif()
add_library(utf8proc::utf8proc UNKNOWN IMPORTED)
set_target_properties(utf8proc::utf8proc PROPERTIES IMPORTED_LOCATION ${UTF8PROC_LIBRARY}
                      INTERFACE_INCLUDE_DIRECTORIES ${UTF8PROC_INCLUDE_DIR})

# Oniguruma: the regex engine of tokenizer.json patterns (the one the tokenizers library uses).
# pkg-config `oniguruma` (Debian libonig-dev), then -DONIGURUMA_ROOT=<prefix> or -DONIGURUMA_INCLUDE_DIR /
# -DONIGURUMA_LIBRARY.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND AND NOT ONIGURUMA_ROOT AND NOT ONIGURUMA_LIBRARY)
  pkg_check_modules(ONIG_PC QUIET oniguruma)
endif()
find_path(ONIGURUMA_INCLUDE_DIR oniguruma.h HINTS ${ONIGURUMA_ROOT} ${ONIGURUMA_ROOT}/include ${ONIG_PC_INCLUDE_DIRS})
find_library(ONIGURUMA_LIBRARY onig HINTS ${ONIGURUMA_ROOT} ${ONIGURUMA_ROOT}/lib ${ONIG_PC_LIBRARY_DIRS})
if(NOT ONIGURUMA_INCLUDE_DIR OR NOT ONIGURUMA_LIBRARY)
  message(FATAL_ERROR "Oniguruma not found: apt-get install libonig-dev (scripts/setup.sh), or pass -DONIGURUMA_ROOT=<prefix>")
endif()
add_library(oniguruma::oniguruma UNKNOWN IMPORTED)
set_target_properties(oniguruma::oniguruma PROPERTIES IMPORTED_LOCATION ${ONIGURUMA_LIBRARY}
                      INTERFACE_INCLUDE_DIRECTORIES ${ONIGURUMA_INCLUDE_DIR})

# FFmpeg's libraries (MP4 with H.264 + AAC): pkg-config (Debian libav*-dev), then -DFFMPEG_ROOT=<prefix
# with include/ and lib/>. DITGEN_FFMPEG defaults to whether they are found; an OFF build refuses MP4
# output (frames + WAV instead). The target ditgen_ffmpeg (libraries only) always exists, empty when
# OFF; FFmpeg's headers and the DITGEN_FFMPEG define reach lib/io/video.cpp alone, so that the switch
# does not change how the rest of the engine compiles.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND AND NOT FFMPEG_ROOT)
  pkg_check_modules(FFMPEG QUIET libavformat libavcodec libavutil libswscale libswresample)
endif()
if(FFMPEG_FOUND)
  set(FFMPEG_LINK ${FFMPEG_LINK_LIBRARIES})
  set(FFMPEG_INCLUDE ${FFMPEG_INCLUDE_DIRS})
else()
  find_path(FFMPEG_INCLUDE_DIR libavformat/avformat.h HINTS ${FFMPEG_ROOT} ${FFMPEG_ROOT}/include)
  set(FFMPEG_LINK)
  foreach(lib avformat avcodec avutil swscale swresample)
    find_library(FFMPEG_${lib}_LIBRARY ${lib} HINTS ${FFMPEG_ROOT} ${FFMPEG_ROOT}/lib)
    list(APPEND FFMPEG_LINK ${FFMPEG_${lib}_LIBRARY})
  endforeach()
  set(FFMPEG_INCLUDE ${FFMPEG_INCLUDE_DIR})
  if(FFMPEG_INCLUDE_DIR AND NOT FFMPEG_LINK MATCHES "NOTFOUND")
    set(FFMPEG_FOUND TRUE)
  endif()
endif()
if(NOT DEFINED DITGEN_FFMPEG)
  set(DITGEN_FFMPEG OFF)
  if(FFMPEG_FOUND)
    set(DITGEN_FFMPEG ON)
  endif()
  set(DITGEN_FFMPEG ${DITGEN_FFMPEG} CACHE BOOL "Write MP4 through FFmpeg's libraries (OFF: frames + WAV only)")
endif()
add_library(ditgen_ffmpeg INTERFACE)
if(DITGEN_FFMPEG)
  if(NOT FFMPEG_FOUND)
    message(FATAL_ERROR "FFmpeg's libraries not found: run scripts/setup.sh (libavformat-dev libavcodec-dev "
                        "libavutil-dev libswscale-dev libswresample-dev), pass -DFFMPEG_ROOT=<prefix>, or "
                        "-DDITGEN_FFMPEG=OFF to build without MP4 output")
  endif()
  target_link_libraries(ditgen_ffmpeg INTERFACE ${FFMPEG_LINK})
  set_source_files_properties(${CMAKE_SOURCE_DIR}/lib/io/video.cpp PROPERTIES COMPILE_DEFINITIONS DITGEN_FFMPEG=1)
  if(FFMPEG_INCLUDE)
    set_source_files_properties(${CMAKE_SOURCE_DIR}/lib/io/video.cpp PROPERTIES INCLUDE_DIRECTORIES "${FFMPEG_INCLUDE}")
  endif()
  message(STATUS "FFmpeg: found, MP4 output on")
else()
  message(STATUS "FFmpeg: off (not found, or -DDITGEN_FFMPEG=OFF): MP4 output is refused, frames + WAV instead")
endif()

# Catch2 (tests only)
if(DITGEN_TESTS)
  find_package(Catch2 QUIET)
  if(NOT TARGET Catch2::Catch2)
    find_path(CATCH2_INCLUDE_DIR catch2/catch.hpp HINTS ${CATCH2_ROOT} ${CATCH2_ROOT}/include REQUIRED)
    add_library(Catch2::Catch2 INTERFACE IMPORTED)
    target_include_directories(Catch2::Catch2 INTERFACE ${CATCH2_INCLUDE_DIR})
  endif()
endif()

# NCCL (CUDA build only): system header + library, or -DNCCL_ROOT
if(DITGEN_CUDA)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT} ${NCCL_ROOT}/include /usr/include /usr/local/cuda/include)
  find_library(NCCL_LIBRARY nccl HINTS ${NCCL_ROOT} ${NCCL_ROOT}/lib /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64)
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
    message(FATAL_ERROR "NCCL not found: pass -DNCCL_ROOT=<prefix with include/nccl.h and lib/libnccl.so>")
  endif()
  add_library(nccl::nccl UNKNOWN IMPORTED)
  set_target_properties(nccl::nccl PROPERTIES IMPORTED_LOCATION ${NCCL_LIBRARY}
                        INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
endif()

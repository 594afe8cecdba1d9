// atomic_file.h: write a file so that a reader (or a crash) never sees half of it
// (DESIGN.md section 11: "written atomically (temp file, fsync, rename)").
//
//   write to PATH.tmp.<pid>.<n> -> fsync(file) -> rename(PATH.tmp.<pid>.<n>, PATH) -> fsync(directory)
// On any error the temporary file is removed and an engine::Error names PATH and errno's text;
// the previous PATH, if any, is untouched. Checkpoints, sample grids, plots and exported tables
// all go through here.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace engine::io {

// `write` streams the content into the opened temporary file (FILE*), then the file is synced
// and renamed over `path`. An exception thrown by `write` removes the temporary and propagates.
void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& write);
void write_file_atomically(const std::string& path, std::string_view content);

// mkdir -p; throws engine::Error naming the path when it cannot be created.
void make_directories(const std::string& path);

}  // namespace engine::io

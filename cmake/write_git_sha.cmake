# Writes OUT, the definition of h2tune::git_sha(), from the checkout at SRC. Run at every build
# (not only when CMake configures), so the sha that runs record names the code that was built;
# the file is rewritten only when the sha changes, so an unchanged checkout recompiles nothing.
# Usage: cmake -DGIT=git -DSRC=<source dir> -DOUT=<file> -P write_git_sha.cmake
set(sha "unknown")
if(GIT)
  execute_process(COMMAND ${GIT} rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
                  OUTPUT_VARIABLE head OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND head)
    set(sha "${head}")
    # Tracked files that differ from HEAD (untracked files are not code the build uses).
    execute_process(COMMAND ${GIT} diff --quiet HEAD WORKING_DIRECTORY ${SRC} RESULT_VARIABLE dirty ERROR_QUIET)
    if(NOT dirty EQUAL 0)
      set(sha "${sha}-dirty")
    endif()
  endif()
endif()
set(content "// Generated at build time by cmake/write_git_sha.cmake; do not edit.\n#include \"h2tune/app/build_info.h\"\n\nnamespace h2tune {\n\nstd::string git_sha() { return \"${sha}\"; }\n\n}  // namespace h2tune\n")
set(old "")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL content)
  file(WRITE ${OUT} "${content}")
endif()

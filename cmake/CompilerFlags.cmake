# Warnings for our own targets, and the sanitizer build.
add_library(dsa_warnings INTERFACE)
target_compile_options(dsa_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wno-unused-parameter)

if(DSA_SANITIZE)
  # Debug build with ASan + UBSan; DSA_DEBUG_CHECKS turns on the hot-loop checks (DSA_DCHECK).
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  add_compile_definitions(DSA_DEBUG_CHECKS=1)
endif()
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  add_compile_definitions(DSA_DEBUG_CHECKS=1)
endif()
if(DSA_FUZZ)
  # Coverage instrumentation for the library code that fuzz targets reach (without it libFuzzer
  # sees only the target's own file), and ASan/UBSan so that memory errors are reported. A UBSan
  # report aborts (a crash libFuzzer saves as a reproducer) instead of printing and going on.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

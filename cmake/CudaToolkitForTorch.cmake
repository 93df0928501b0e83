# Torch's CMake config (Caffe2/public/cuda.cmake) needs a CUDA toolkit whenever
# torch itself was built with CUDA, even for CPU-only use. Two traps seen on
# real machines, resolved here from the environment:
#  * `nvcc` on PATH may be a wrapper script, so FindCUDA guesses a wrong root.
#    We look for a directory that really holds bin/nvcc and include/cuda.h.
#  * the toolkit may lack libraries torch links (libnvrtc, cuBLAS, ...); the
#    nvidia-* wheels that torch depends on ship them, so we point the
#    CUDA_<lib>_LIBRARY cache entries at those files.

function(_torchship_toolkit_candidates out)
  set(cands "")
  foreach(var CUDAToolkit_ROOT CUDA_TOOLKIT_ROOT_DIR CUDA_HOME CUDA_PATH)
    if(DEFINED ${var} AND NOT "${${var}}" STREQUAL "")
      list(APPEND cands "${${var}}")
    endif()
    if(DEFINED ENV{${var}} AND NOT "$ENV{${var}}" STREQUAL "")
      list(APPEND cands "$ENV{${var}}")
    endif()
  endforeach()
  find_program(_nvcc_on_path nvcc)
  if(_nvcc_on_path)
    file(REAL_PATH "${_nvcc_on_path}" _nvcc_real)
    get_filename_component(_bin "${_nvcc_real}" DIRECTORY)
    get_filename_component(_root "${_bin}" DIRECTORY)
    list(APPEND cands "${_root}")
    # A wrapper script that `exec`s the real nvcc: read the path it names.
    file(STRINGS "${_nvcc_real}" _lines LIMIT_COUNT 20 REGEX "/bin/nvcc")
    foreach(line IN LISTS _lines)
      if(line MATCHES "([^ \"']+)/bin/nvcc")
        list(APPEND cands "${CMAKE_MATCH_1}")
      endif()
    endforeach()
  endif()
  list(APPEND cands /usr/local/cuda)
  set(${out} "${cands}" PARENT_SCOPE)
endfunction()

function(torchship_prepare_cuda_toolkit torch_cuda_version)
  _torchship_toolkit_candidates(cands)
  set(root "")
  foreach(c IN LISTS cands)
    if(EXISTS "${c}/bin/nvcc" AND EXISTS "${c}/include/cuda.h")
      set(root "${c}")
      break()
    endif()
  endforeach()
  if(root STREQUAL "")
    message(FATAL_ERROR
      "torchship: torch was built with CUDA ${torch_cuda_version}, and its CMake config needs a CUDA toolkit, "
      "but none was found (looked in: ${cands}). Install the toolkit or set CUDA_HOME.")
  endif()
  set(CUDA_TOOLKIT_ROOT_DIR "${root}" CACHE PATH "CUDA toolkit used by torch's CMake config" FORCE)
  set(CUDAToolkit_ROOT "${root}" CACHE PATH "" FORCE)
  set(CMAKE_CUDA_COMPILER "${root}/bin/nvcc" CACHE FILEPATH "" FORCE)
  # torchship compiles no CUDA sources; these only satisfy torch's config:
  # CMake 3.25 knows no CUDA20 dialect for nvcc, and GPU-arch detection would
  # try to run a program on a GPU that may not be there.
  set(CMAKE_CUDA_STANDARD 17 PARENT_SCOPE)
  set(CMAKE_CUDA_EXTENSIONS OFF PARENT_SCOPE)
  if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    set(TORCH_CUDA_ARCH_LIST "8.0;9.0" PARENT_SCOPE)
  endif()

  # Libraries the toolkit lacks: take them from the nvidia wheels next to torch.
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import nvidia, os; print(';'.join(os.path.join(p, d, 'lib') for p in nvidia.__path__ for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, 'lib'))))"
    OUTPUT_VARIABLE wheel_lib_dirs
    RESULT_VARIABLE rc
    ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    set(wheel_lib_dirs "")
  endif()
  set(from_wheels "")
  foreach(lib nvrtc cublas cublasLt cufft curand cusolver cusparse nvJitLink cupti cufile)
    if(CUDA_${lib}_LIBRARY)
      continue()
    endif()
    unset(_in_toolkit)
    find_library(_in_toolkit NAMES ${lib} PATHS "${root}/lib64" "${root}/lib" NO_DEFAULT_PATH NO_CACHE)
    if(_in_toolkit)
      continue()
    endif()
    foreach(dir IN LISTS wheel_lib_dirs)
      file(GLOB found "${dir}/lib${lib}.so.[0-9]*")
      list(FILTER found EXCLUDE REGEX "\\.alt\\.")
      if(found)
        list(GET found 0 f)
        set(CUDA_${lib}_LIBRARY "${f}" CACHE FILEPATH "from the nvidia wheel" FORCE)
        list(APPEND from_wheels "${lib}")
        break()
      endif()
    endforeach()
  endforeach()
  message(STATUS "torchship: CUDA toolkit at ${root}; taken from nvidia wheels: ${from_wheels}")
  set(CUDAToolkit_ROOT "${root}" PARENT_SCOPE)
endfunction()

# Finds LibTorch through the Python interpreter that builds torchship, so the
# extension and the server always link the torch that `import torch` loads.
#
# Sets: TORCHSHIP_TORCH_VERSION, TORCHSHIP_TORCH_CUDA_VERSION (empty on CPU builds),
#       TORCHSHIP_WITH_CUDA (ON/OFF), TORCH_LIBRARIES, TORCH_INSTALL_PREFIX,
#       TORCHSHIP_TORCH_PYTHON_LIBRARY.
#
# Option TORCHSHIP_CUDA=AUTO|ON|OFF: AUTO uses CUDA when torch was built with it;
# ON fails when it was not; OFF never compiles CUDA-specific code.

set(TORCHSHIP_CUDA "AUTO" CACHE STRING "Build CUDA support: AUTO, ON or OFF")
set_property(CACHE TORCHSHIP_CUDA PROPERTY STRINGS AUTO ON OFF)

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
          "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(torch.version.cuda or '')"
  OUTPUT_VARIABLE _torch_info
  ERROR_VARIABLE _torch_error
  RESULT_VARIABLE _torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR
    "torchship: `import torch` failed in ${Python_EXECUTABLE}.\n"
    "Install torch into that interpreter first (tools/bootstrap.sh does it).\n${_torch_error}")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_prefix)
list(GET _torch_info 1 TORCHSHIP_TORCH_VERSION)
list(LENGTH _torch_info _n)
set(TORCHSHIP_TORCH_CUDA_VERSION "")
if(_n GREATER 2)
  list(GET _torch_info 2 TORCHSHIP_TORCH_CUDA_VERSION)
endif()
list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")

set(TORCHSHIP_WITH_CUDA OFF)
if(TORCHSHIP_TORCH_CUDA_VERSION STREQUAL "")
  if(TORCHSHIP_CUDA STREQUAL "ON")
    message(FATAL_ERROR "torchship: TORCHSHIP_CUDA=ON but torch ${TORCHSHIP_TORCH_VERSION} is a CPU-only build.")
  endif()
elseif(NOT TORCHSHIP_CUDA STREQUAL "OFF")
  set(TORCHSHIP_WITH_CUDA ON)
endif()

if(TORCHSHIP_TORCH_CUDA_VERSION)
  include("${CMAKE_CURRENT_LIST_DIR}/CudaToolkitForTorch.cmake")
  torchship_prepare_cuda_toolkit("${TORCHSHIP_TORCH_CUDA_VERSION}")
endif()

find_package(Torch REQUIRED)

# The pybind11 type casters for at::Tensor live in libtorch_python.
find_library(TORCHSHIP_TORCH_PYTHON_LIBRARY torch_python PATHS "${TORCH_INSTALL_PREFIX}/lib" NO_DEFAULT_PATH)
if(NOT TORCHSHIP_TORCH_PYTHON_LIBRARY)
  message(FATAL_ERROR "torchship: libtorch_python not found under ${TORCH_INSTALL_PREFIX}/lib")
endif()

if(TORCHSHIP_WITH_CUDA)
  message(STATUS "torchship: torch ${TORCHSHIP_TORCH_VERSION} at ${TORCH_INSTALL_PREFIX}; CUDA ${TORCHSHIP_TORCH_CUDA_VERSION} support ON (toolkit ${CUDAToolkit_ROOT})")
else()
  message(STATUS "torchship: torch ${TORCHSHIP_TORCH_VERSION} at ${TORCH_INSTALL_PREFIX}; CUDA support OFF (CPU only)")
endif()

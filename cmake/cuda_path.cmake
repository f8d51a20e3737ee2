# Decides LT_CUDA. The CUDA wheel of torch ships its own NCCL (nvidia-nccl-*);
# prefer that one so that our communicator and LibTorch load the same library.
set(_lt_has_torch_cuda OFF)
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(_lt_has_torch_cuda ON)
endif()

execute_process(
  COMMAND python3 -c "import nvidia.nccl as n; print(list(n.__path__)[0])"
  OUTPUT_VARIABLE _lt_wheel_nccl OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
find_path(NCCL_INCLUDE_DIR nccl.h
  HINTS ${_lt_wheel_nccl}/include ENV NCCL_HOME ${CUDAToolkit_INCLUDE_DIRS}
  PATH_SUFFIXES include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR
  HINTS ${_lt_wheel_nccl}/lib ENV NCCL_HOME ${CUDAToolkit_LIBRARY_DIR}
  PATH_SUFFIXES lib lib64)

set(_lt_cuda_default OFF)
if(_lt_has_torch_cuda AND NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  set(_lt_cuda_default ON)
endif()
option(LT_CUDA "Build the CUDA path (NCCL communicator, device streams, pinned memory)" ${_lt_cuda_default})
if(LT_CUDA AND NOT (NCCL_INCLUDE_DIR AND NCCL_LIBRARY))
  message(FATAL_ERROR "LT_CUDA=ON but NCCL was not found: set NCCL_HOME or pass -DLT_CUDA=OFF")
endif()
message(STATUS "longtrain: CUDA path ${LT_CUDA} (torch CUDA: ${_lt_has_torch_cuda}, NCCL: ${NCCL_LIBRARY})")

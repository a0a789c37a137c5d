# Helpers shared by every folder's CMakeLists.

# Warnings for the project's own code only (third-party headers come in as
# SYSTEM include directories through the imported targets).
function(oclip_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
endfunction()

# Links LibTorch and precompiles its headers for `target`: one <torch/torch.h>
# costs ~20 s per translation unit otherwise, so every LibTorch target pays it
# once.
function(oclip_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  target_compile_options(${target} PUBLIC ${OCLIP_TORCH_CXX_FLAGS})
  # LibTorch's headers are not clean under -Wextra.
  get_target_property(torch_includes torch INTERFACE_INCLUDE_DIRECTORIES)
  if(torch_includes)
    target_include_directories(${target} SYSTEM PUBLIC ${torch_includes})
  endif()
  if(OCLIP_USE_PCH)
    target_precompile_headers(${target} PRIVATE <torch/torch.h>)
  endif()
endfunction()

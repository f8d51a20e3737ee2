# The layers of longtrain, lowest first. A file may include its own layer
# and those below it, never one above: configure fails naming the file, the
# line and the layers. Each layer is also its own library (CMakeLists.txt),
# linked only to the layers below it.
set(LT_LAYERS
  "base:core/util/ core/config/"
  "model:core/model/ core/attention/ core/data/ core/hf/ core/optim/ core/checkpoint/"
  "comm:parallel/comm/ parallel/mesh/"
  "parallel:parallel/"
  "offload:offload/"
  "train:train/"
  "cli:cli/")

# The index of the layer holding `path` (relative to the source root), or -1.
function(lt_layer_of path out)
  set(index 0)
  set(found -1)
  foreach(layer IN LISTS LT_LAYERS)
    string(REGEX REPLACE "^[a-z]+:" "" prefixes "${layer}")
    separate_arguments(prefixes)
    foreach(prefix IN LISTS prefixes)
      string(FIND "${path}" "${prefix}" at)
      if(at EQUAL 0 AND found EQUAL -1)
        set(found ${index})
      endif()
    endforeach()
    math(EXPR index "${index} + 1")
  endforeach()
  set(${out} ${found} PARENT_SCOPE)
endfunction()

function(lt_layer_name index out)
  list(GET LT_LAYERS ${index} layer)
  string(REGEX REPLACE ":.*" "" name "${layer}")
  set(${out} ${name} PARENT_SCOPE)
endfunction()

# Fails configure when a file of a layer includes a file of a higher one.
function(lt_check_layers root)
  file(GLOB_RECURSE sources RELATIVE ${root}
       ${root}/core/*.h ${root}/core/*.cpp ${root}/parallel/*.h ${root}/parallel/*.cpp
       ${root}/offload/*.h ${root}/offload/*.cpp ${root}/train/*.h ${root}/train/*.cpp
       ${root}/cli/*.h ${root}/cli/*.cpp)
  set(errors "")
  foreach(source IN LISTS sources)
    lt_layer_of("${source}" own)
    if(own EQUAL -1)
      continue()
    endif()
    file(STRINGS ${root}/${source} includes REGEX "^#include \"")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^#include \"([^\"]+)\".*" "\\1" included "${line}")
      lt_layer_of("${included}" theirs)
      if(theirs GREATER own)
        lt_layer_name(${own} own_name)
        lt_layer_name(${theirs} their_name)
        string(APPEND errors "  ${source} (layer ${own_name}) includes ${included} (layer ${their_name})\n")
      endif()
    endforeach()
  endforeach()
  if(errors)
    message(FATAL_ERROR "includes against the layering of cmake/layers.cmake (a layer may include only "
                        "itself and the layers below it):\n${errors}")
  endif()
endfunction()

# Stand-in for the SlicerConfig.cmake of a Slicer build tree, only as much as the extension's
# CMake files use, so tests can configure, build and install the extension without Slicer.
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/NoOp.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/NoOp.cmake)

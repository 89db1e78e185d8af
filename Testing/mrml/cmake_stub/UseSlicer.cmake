# Stand-ins for the Slicer/CTK macros the extension calls; same arguments, same file layout:
# scripts and resources copied into DESTINATION_DIR (relative paths kept), that folder installed
# into INSTALL_DIR. Nonexistent files are fatal, as in slicerMacroBuildScriptedModule.
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.13/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(BUILD_TESTING ON)

macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(_CTK "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  if(_CTK_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments ${_CTK_UNPARSED_ARGUMENTS}")
  endif()
  foreach(_var TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT _CTK_${_var})
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${_var} is mandatory")
    endif()
  endforeach()
  if(NOT _CTK_SOURCE_DIR)
    set(_CTK_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  set(_ctk_files)
  foreach(_file IN LISTS _CTK_SCRIPTS)
    if(NOT _file MATCHES "\\.py$")
      set(_file "${_file}.py")
    endif()
    list(APPEND _ctk_files ${_file})
  endforeach()
  list(APPEND _ctk_files ${_CTK_RESOURCES})
  foreach(_file IN LISTS _ctk_files)
    if(NOT EXISTS ${_CTK_SOURCE_DIR}/${_file})
      message(FATAL_ERROR "ctkMacroCompilePythonScript(${_CTK_TARGET_NAME}): nonexistent file ${_file}")
    endif()
    configure_file(${_CTK_SOURCE_DIR}/${_file} ${_CTK_DESTINATION_DIR}/${_file} COPYONLY)
  endforeach()
  set_property(GLOBAL APPEND PROPERTY ANGIORECON_TEST_TARGETS ${_CTK_TARGET_NAME})
  if(_CTK_NO_INSTALL_SUBDIR)
    install(DIRECTORY ${_CTK_DESTINATION_DIR}/ DESTINATION ${_CTK_INSTALL_DIR})
  else()
    install(DIRECTORY ${_CTK_DESTINATION_DIR} DESTINATION ${_CTK_INSTALL_DIR})
  endif()
endmacro()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${_SLICER_NAME}
    SCRIPTS "${_SLICER_SCRIPTS}"
    RESOURCES "${_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR
    )
endmacro()

macro(slicer_add_python_unittest)
  cmake_parse_arguments(_TEST "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${_TEST_SCRIPT})
    message(FATAL_ERROR "slicer_add_python_unittest: nonexistent script ${_TEST_SCRIPT}")
  endif()
  set_property(GLOBAL APPEND PROPERTY ANGIORECON_TEST_UNITTESTS ${_TEST_SCRIPT})
endmacro()

# Finds ONNX Runtime and defines the imported target onnxruntime::onnxruntime.
#
# The normal path: an official release (https://github.com/microsoft/onnxruntime/releases), unpacked
#   -DORT_ROOT=/opt/onnxruntime-linux-x64-1.24.0            (include/ and lib/ below it)
# or the two parts given one by one:
#   -DORT_INCLUDE_DIR=.../include -DORT_LIBRARY=.../lib/libonnxruntime.so
#
# Without them (development and CI here), the headers come from the npm package ${MTST_ORT_HEADERS_NPM}
# (the official MIT-licensed ONNX Runtime headers it carries, unpacked into the build tree; the package
# itself is deleted) and the library from the Python onnxruntime wheel: the one installed for
# MTST_PYTHON, else the wheel pinned in .ci/constraints.txt, pip-downloaded into the build tree. The wheel
# holds libonnxruntime.so.<version> with SONAME libonnxruntime.so.1 but no file of that name: the build
# tree gets that name as a symlink, else programs build and then fail to start.
#
# Either way, configure checks that the headers' ORT_API_VERSION is one the library serves.

set(ORT_ROOT "" CACHE PATH "ONNX Runtime release folder (include/, lib/)")
set(ORT_INCLUDE_DIR "" CACHE PATH "Folder holding onnxruntime_cxx_api.h")
set(ORT_LIBRARY "" CACHE FILEPATH "The ONNX Runtime shared library")
set(MTST_ORT_HEADERS_NPM "@qvac/onnx@0.15.1" CACHE STRING "npm package carrying the ONNX Runtime headers (fallback)")
set(MTST_PYTHON "" CACHE FILEPATH "Python whose onnxruntime wheel provides the library (fallback)")

set(MTST_ORT_BUNDLED OFF)  # ON when the library comes from the wheel: installed beside libmtst_runtime
set(_ort_deps "${CMAKE_BINARY_DIR}/_deps/onnxruntime")

# ---------------------------------------------------------------- headers
if(ORT_ROOT AND NOT ORT_INCLUDE_DIR)
  find_path(ORT_INCLUDE_DIR onnxruntime_cxx_api.h
            PATHS "${ORT_ROOT}/include" "${ORT_ROOT}/include/onnxruntime" NO_DEFAULT_PATH REQUIRED)
endif()
if(NOT ORT_INCLUDE_DIR)
  set(_hdr "${_ort_deps}/include")
  if(NOT EXISTS "${_hdr}/onnxruntime_cxx_api.h")
    find_program(NPM_EXECUTABLE npm)
    if(NOT NPM_EXECUTABLE)
      message(FATAL_ERROR "ONNX Runtime headers: pass -DORT_ROOT=<official release folder> (or ORT_INCLUDE_DIR), "
                          "or install npm to fetch ${MTST_ORT_HEADERS_NPM}")
    endif()
    set(_pack "${_ort_deps}/npm")
    file(REMOVE_RECURSE "${_pack}")
    file(MAKE_DIRECTORY "${_pack}")
    message(STATUS "ONNX Runtime headers: npm pack ${MTST_ORT_HEADERS_NPM}")
    execute_process(COMMAND "${NPM_EXECUTABLE}" pack "${MTST_ORT_HEADERS_NPM}" --silent
                    WORKING_DIRECTORY "${_pack}" RESULT_VARIABLE _rc OUTPUT_VARIABLE _tgz OUTPUT_STRIP_TRAILING_WHITESPACE)
    file(GLOB _tgz "${_pack}/*.tgz")
    if(NOT _rc EQUAL 0 OR NOT _tgz)
      message(FATAL_ERROR "npm pack ${MTST_ORT_HEADERS_NPM} failed (exit ${_rc}); pass -DORT_ROOT=<release folder>")
    endif()
    file(ARCHIVE_EXTRACT INPUT "${_tgz}" DESTINATION "${_pack}"
         PATTERNS "package/prebuilds/include/onnxruntime/*.h" "package/LICENSE")
    file(GLOB _headers "${_pack}/package/prebuilds/include/onnxruntime/*.h")
    if(NOT _headers)
      message(FATAL_ERROR "${MTST_ORT_HEADERS_NPM} holds no prebuilds/include/onnxruntime/*.h")
    endif()
    file(MAKE_DIRECTORY "${_hdr}")
    file(COPY ${_headers} DESTINATION "${_hdr}")
    if(EXISTS "${_pack}/package/LICENSE")
      file(COPY "${_pack}/package/LICENSE" DESTINATION "${_hdr}")
    endif()
    file(REMOVE_RECURSE "${_pack}")  # ~72 MB of prebuilt binaries we do not use
  endif()
  set(ORT_INCLUDE_DIR "${_hdr}" CACHE PATH "Folder holding onnxruntime_cxx_api.h" FORCE)
endif()
if(NOT EXISTS "${ORT_INCLUDE_DIR}/onnxruntime_cxx_api.h")
  message(FATAL_ERROR "ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} holds no onnxruntime_cxx_api.h")
endif()
file(STRINGS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX MATCH "[0-9]+" ORT_HEADERS_API_VERSION "${_api_line}")

# ---------------------------------------------------------------- library
if(ORT_ROOT AND NOT ORT_LIBRARY)
  find_library(ORT_LIBRARY NAMES onnxruntime PATHS "${ORT_ROOT}/lib" "${ORT_ROOT}/lib64" NO_DEFAULT_PATH REQUIRED)
endif()
if(NOT ORT_LIBRARY)
  set(_capi "")
  if(NOT MTST_PYTHON)
    find_package(Python3 COMPONENTS Interpreter QUIET)
    if(Python3_FOUND)
      set(MTST_PYTHON "${Python3_EXECUTABLE}")
    endif()
  endif()
  if(MTST_PYTHON)
    execute_process(COMMAND "${MTST_PYTHON}" -c "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))"
                    RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_rc EQUAL 0)
      set(_capi "${_out}")
    endif()
  endif()
  if(NOT _capi)
    file(STRINGS "${PROJECT_SOURCE_DIR}/.ci/constraints.txt" _pin REGEX "^onnxruntime==")
    if(NOT _pin OR NOT MTST_PYTHON)
      message(FATAL_ERROR "ONNX Runtime library: pass -DORT_ROOT=<release folder> (or ORT_LIBRARY), or "
                          "-DMTST_PYTHON=<python with onnxruntime installed>")
    endif()
    set(_wheels "${_ort_deps}/wheel")
    file(GLOB _whl "${_wheels}/onnxruntime-*.whl")
    if(NOT _whl)
      message(STATUS "ONNX Runtime library: pip download ${_pin}")
      execute_process(COMMAND "${MTST_PYTHON}" -m pip download --no-deps --only-binary=:all: "${_pin}" -d "${_wheels}" -q
                      RESULT_VARIABLE _rc)
      file(GLOB _whl "${_wheels}/onnxruntime-*.whl")
      if(NOT _rc EQUAL 0 OR NOT _whl)
        message(FATAL_ERROR "pip download ${_pin} failed; pass -DORT_ROOT=<release folder>")
      endif()
    endif()
    file(ARCHIVE_EXTRACT INPUT "${_whl}" DESTINATION "${_wheels}/x" PATTERNS "onnxruntime/capi/libonnxruntime.so*")
    set(_capi "${_wheels}/x/onnxruntime/capi")
  endif()
  file(GLOB _real "${_capi}/libonnxruntime.so.*.*.*")
  list(LENGTH _real _n)
  if(NOT _n EQUAL 1)
    message(FATAL_ERROR "expected one libonnxruntime.so.X.Y.Z in ${_capi}, found: ${_real}")
  endif()
  # the SONAME file the loader looks for (libonnxruntime.so.1) and the link name, as symlinks
  set(_lib "${_ort_deps}/lib")
  file(MAKE_DIRECTORY "${_lib}")
  get_filename_component(_real_name "${_real}" NAME)
  string(REGEX REPLACE "\\.[0-9]+\\.[0-9]+$" "" _soname "${_real_name}")
  file(CREATE_LINK "${_real}" "${_lib}/${_real_name}" SYMBOLIC)
  file(CREATE_LINK "${_real_name}" "${_lib}/${_soname}" SYMBOLIC)
  file(CREATE_LINK "${_soname}" "${_lib}/libonnxruntime.so" SYMBOLIC)
  set(ORT_LIBRARY "${_lib}/${_soname}" CACHE FILEPATH "The ONNX Runtime shared library" FORCE)
endif()
string(FIND "${ORT_LIBRARY}" "${_ort_deps}/" _pos)
if(_pos EQUAL 0)
  set(MTST_ORT_BUNDLED ON)
endif()
if(NOT EXISTS "${ORT_LIBRARY}")
  message(FATAL_ERROR "ORT_LIBRARY=${ORT_LIBRARY} does not exist")
endif()

# ---------------------------------------------------------------- check: headers vs library
if(NOT CMAKE_CROSSCOMPILING)
  try_run(_ort_run _ort_compiled "${CMAKE_BINARY_DIR}/_deps/ort-check"
          SOURCES "${CMAKE_CURRENT_LIST_DIR}/ort_version_check.cpp"
          CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${ORT_INCLUDE_DIR}" "-DLINK_LIBRARIES=${ORT_LIBRARY}"
          COMPILE_OUTPUT_VARIABLE _compile_out RUN_OUTPUT_VARIABLE _run_out)
  if(NOT _ort_compiled)
    message(FATAL_ERROR "cannot build against ONNX Runtime (headers ${ORT_INCLUDE_DIR}, library ${ORT_LIBRARY}):\n${_compile_out}")
  endif()
  if(NOT _ort_run EQUAL 0)
    message(FATAL_ERROR "ONNX Runtime headers (API ${ORT_HEADERS_API_VERSION}) do not fit the library ${ORT_LIBRARY}: ${_run_out}")
  endif()
  string(STRIP "${_run_out}" ORT_LIBRARY_VERSION)
  message(STATUS "ONNX Runtime: library ${ORT_LIBRARY_VERSION} (${ORT_LIBRARY}), headers API ${ORT_HEADERS_API_VERSION} (${ORT_INCLUDE_DIR})")
endif()

add_library(onnxruntime::onnxruntime SHARED IMPORTED)
set_target_properties(onnxruntime::onnxruntime PROPERTIES
  IMPORTED_LOCATION "${ORT_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${ORT_INCLUDE_DIR}")

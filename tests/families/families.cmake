# Heterogeneity across model families: H2Tune federating clients of different Hugging Face
# families, export from non-Llama clients, and perplexity of every family against transformers.
# Included from tests/CMakeLists.txt after the fixtures it uses: tiny_model (${H2TUNE_TEST_MODEL}),
# tokenizer_fixture (test_models/tokenizer.json, vocabulary 1024) and model_fixtures (the
# random-weight checkpoints of tests/reference/models/make_fixtures.py in ${H2TUNE_MODEL_FIXTURES},
# vocabulary 1024; they have no tokenizer.json, so every client and eval names the test tokenizer).
# Everything here needs the reference venv (the fixtures are made with transformers), hence the
# label reference throughout; the federated runs are also labelled mpi.
set(_fam_src ${CMAKE_CURRENT_LIST_DIR})
set(_fam_out ${CMAKE_CURRENT_BINARY_DIR}/test_families)
set(_fam_tok ${CMAKE_CURRENT_BINARY_DIR}/test_models/tokenizer.json)
set(_fam_text ${PROJECT_SOURCE_DIR}/tests/export/sample.txt)
set(_fam_models ${H2TUNE_MODEL_FIXTURES})
set(_fam_pyenv "PYTHONWARNINGS=ignore;TRANSFORMERS_VERBOSITY=error")
set(_fam_requires "model_fixtures;tokenizer_fixture;tiny_model")

# `--dtype` of eval: float16 is refused on the CPU before anything is loaded, an unknown name too.
add_test(NAME families_cli_eval_dtype_float16
         COMMAND h2tune eval --model-dir ${_fam_out}/none --perplexity ${_fam_text} --dtype float16)
set_tests_properties(families_cli_eval_dtype_float16 PROPERTIES LABELS "unit;cli"
                     PASS_REGULAR_EXPRESSION "--dtype float16: needs a CUDA device")
add_test(NAME families_cli_eval_dtype_unknown
         COMMAND h2tune eval --model-dir ${_fam_out}/none --perplexity ${_fam_text} --dtype float8)
set_tests_properties(families_cli_eval_dtype_unknown PROPERTIES LABELS "unit;cli"
                     PASS_REGULAR_EXPRESSION "--dtype")
add_test(NAME families_cli_eval_dtype_exit_code
         COMMAND h2tune eval --model-dir ${_fam_out}/none --perplexity ${_fam_text} --dtype float8)
set_tests_properties(families_cli_eval_dtype_exit_code PROPERTIES LABELS "unit;cli" WILL_FAIL TRUE)

# ---------------------------------------------------------------- the federated runs (mpi;reference)
# tests/families/families_federated.ini: six clients on three ranks. client | fixture
set(_fam_clients "1|qwen2" "2|gemma2" "3|mistral" "4|gemma" "5|qwen2")
set(_fam_sets --set client.0.model_dir=${H2TUNE_TEST_MODEL})
foreach(entry ${_fam_clients})
  string(REPLACE "|" ";" entry "${entry}")
  list(GET entry 0 k)
  list(GET entry 1 name)
  list(APPEND _fam_sets --set client.${k}.model_dir=${_fam_models}/${name}/f32 --set client.${k}.tokenizer=${_fam_tok})
endforeach()
set(_fam_train ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 3 $<TARGET_FILE:h2tune> train
    --config tests/families/families_federated.ini --force --threads 1 ${_fam_sets})
set(_fam_run ${_fam_out}/h2tune)

# name | output | extra train arguments | what the log must show
#  h2tune   the job as written: every family's upload accepted in both rounds.
#  bf16     client 1 (qwen2) from its BF16 checkpoint with a bfloat16 base beside float32 clients;
#           one step and 4 test examples for that client, as bfloat16 matmuls are slow on a CPU.
#  hetlora  a LoRA baseline over the same clients: only clients 1 and 5 (the same qwen2, ranks 4
#           and 8) share an architecture and aggregate; every other family trains alone.
set(_fam_runs
    "h2tune|${_fam_run}||round 2/2  acc mean.*done in"
    "bf16|${_fam_out}/bf16|--set,client.1.model_dir=${_fam_models}/qwen2/bf16,--set,client.1.model_dtype=bfloat16,--set,client.1.local_steps=1,--set,client.1.test_examples=4|round 2/2  acc mean.*done in"
    "hetlora|${_fam_out}/hetlora|--method,hetlora|group 0: clients 1 5 aggregate with hetlora\n  alone [^\n]*: 0 2 3 4\n.*round 2/2  acc mean.*done in")
foreach(case ${_fam_runs})
  string(REPLACE "|" ";" case "${case}")
  list(GET case 0 name)
  list(GET case 1 out)
  list(GET case 2 extra)
  list(GET case 3 pass)
  string(REPLACE "," ";" extra "${extra}")
  add_test(NAME families_federated_${name}
           COMMAND ${_fam_train} --output ${out} ${extra}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(families_federated_${name} PROPERTIES LABELS "mpi;reference" FIXTURES_REQUIRED "${_fam_requires}"
                       FIXTURES_SETUP families_${name}_run ENVIRONMENT "${H2TUNE_TEST_ENV}" PROCESSORS 2 TIMEOUT 300
                       PASS_REGULAR_EXPRESSION "${pass}" FAIL_REGULAR_EXPRESSION "excluded|nan")
  # Per-client metrics of all six clients in both rounds; the H2Tune runs also their payload bytes
  # and mask densities r_k^2 / R^2.
  set(_federated --federated)
  if(name STREQUAL "hetlora")
    set(_federated)
  endif()
  add_test(NAME families_federated_${name}_metrics
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/check_metrics.py ${out}/metrics.h5
                   --clients 6 --rounds 2 ${_federated})
  set_tests_properties(families_federated_${name}_metrics PROPERTIES LABELS "reference"
                       FIXTURES_REQUIRED families_${name}_run PASS_REGULAR_EXPRESSION "check_metrics: OK")
endforeach()
# hetlora moved bytes for the qwen2 pair only; the other families trained alone.
add_test(NAME families_federated_hetlora_groups
         COMMAND /usr/bin/python3 ${_fam_src}/check_lora_groups.py ${_fam_out}/hetlora/metrics.h5 --group 1,5)
set_tests_properties(families_federated_hetlora_groups PROPERTIES LABELS "reference"
                     FIXTURES_REQUIRED families_hetlora_run PASS_REGULAR_EXPRESSION "check_lora_groups: OK")
# Changing only client 1 (its base in bfloat16) leaves every other client's round 0 bit-identical
# and changes every other client's final adapter: what one family uploads reaches all of them.
add_test(NAME families_federated_crossing
         COMMAND /usr/bin/python3 ${_fam_src}/check_crossing.py ${_fam_run} ${_fam_out}/bf16 --changed 1)
set_tests_properties(families_federated_crossing PROPERTIES LABELS "reference"
                     FIXTURES_REQUIRED "families_h2tune_run;families_bf16_run" PASS_REGULAR_EXPRESSION "check_crossing: OK")

# ---------------------------------------------------------------- export from non-Llama clients
# From the H2Tune run: the PEFT adapter directory on the transformers model gives h2tune's
# log-probs (eval --adapter with the run's file), and the merged directory gives them in
# transformers and in h2tune. client | fixture
foreach(entry "1|qwen2" "2|gemma2")
  string(REPLACE "|" ";" entry "${entry}")
  list(GET entry 0 k)
  list(GET entry 1 name)
  set(_x ${_fam_out}/export/client${k}_${name})
  set(_base ${_fam_models}/${name}/f32)
  add_test(NAME families_export_${name}_adapter
           COMMAND h2tune export --run ${_fam_run} --client ${k} --out ${_x}_adapter
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(families_export_${name}_adapter PROPERTIES LABELS "reference" FIXTURES_REQUIRED families_h2tune_run
                       FIXTURES_SETUP families_export_${name}_adapter PASS_REGULAR_EXPRESSION "-> PEFT adapter")
  add_test(NAME families_export_${name}_merged
           COMMAND h2tune export --run ${_fam_run} --client ${k} --out ${_x}_merged --merged
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(families_export_${name}_merged PROPERTIES LABELS "reference" FIXTURES_REQUIRED families_h2tune_run
                       FIXTURES_SETUP families_export_${name}_merged
                       PASS_REGULAR_EXPRESSION "-> merged model .*W0 \\+ B A in F32")
  add_test(NAME families_export_${name}_perplexity_adapter
           COMMAND h2tune eval --model-dir ${_base} --tokenizer ${_fam_tok} --perplexity ${_fam_text}
                   --adapter ${_fam_run}/adapters/client_${k}.safetensors --json ${_x}_adapter.json --threads 1)
  set_tests_properties(families_export_${name}_perplexity_adapter PROPERTIES LABELS "reference"
                       FIXTURES_REQUIRED families_h2tune_run FIXTURES_SETUP families_perplexity_${name}_adapter
                       TIMEOUT 300 PASS_REGULAR_EXPRESSION "token log-probabilities in")
  # The merged directory carries the client's tokenizer.json, so it serves alone.
  add_test(NAME families_export_${name}_perplexity_merged
           COMMAND h2tune eval --model-dir ${_x}_merged --perplexity ${_fam_text} --json ${_x}_merged.json --threads 1)
  set_tests_properties(families_export_${name}_perplexity_merged PROPERTIES LABELS "reference"
                       FIXTURES_REQUIRED families_export_${name}_merged FIXTURES_SETUP families_perplexity_${name}_merged
                       TIMEOUT 300 PASS_REGULAR_EXPRESSION "token log-probabilities in")
  add_test(NAME families_export_${name}_merged_equals_adapter
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/export/check_logprobs_json.py ${_x}_merged.json
                   --same-as ${_x}_adapter.json --tolerance 1e-4)
  set_tests_properties(families_export_${name}_merged_equals_adapter PROPERTIES LABELS "reference"
                       FIXTURES_REQUIRED "families_perplexity_${name}_merged;families_perplexity_${name}_adapter")
  add_test(NAME families_reference_export_${name}_peft
           COMMAND ${H2TUNE_REFENV_PYTHON} ${PROJECT_SOURCE_DIR}/tests/export/compare_transformers.py ${_x}_adapter.json
                   --model ${_base} --adapter ${_x}_adapter --tolerance 1e-4)
  set_tests_properties(families_reference_export_${name}_peft PROPERTIES LABELS "reference" ENVIRONMENT "${_fam_pyenv}"
                       FIXTURES_REQUIRED "families_perplexity_${name}_adapter;families_export_${name}_adapter"
                       TIMEOUT 300)
  add_test(NAME families_reference_export_${name}_merged
           COMMAND ${H2TUNE_REFENV_PYTHON} ${PROJECT_SOURCE_DIR}/tests/export/compare_transformers.py ${_x}_merged.json
                   --model ${_x}_merged --tolerance 1e-4)
  set_tests_properties(families_reference_export_${name}_merged PROPERTIES LABELS "reference" ENVIRONMENT "${_fam_pyenv}"
                       FIXTURES_REQUIRED families_perplexity_${name}_merged
                       TIMEOUT 300)
endforeach()

# ---------------------------------------------------------------- perplexity of every family
# Each fixture's float32 checkpoint in float32 (bar 1e-4) and its BF16 checkpoint computed in
# bfloat16 (--dtype; bar 0.5, plus error vs the float32 computation within 2x transformers' own
# + 0.02), the ids of h2tune's JSON scored by transformers. The sample text (342 tokens) is
# longer than every sliding window.
foreach(name llama3 smollm2 llama_traits qwen2 mistral gemma gemma2)
  set(_cases)
  foreach(dtype "f32|float32|1e-4" "bf16|bfloat16|0.5")
    string(REPLACE "|" ";" dtype "${dtype}")
    list(GET dtype 0 dir)
    list(GET dtype 1 type)
    list(GET dtype 2 tolerance)
    set(_json ${_fam_out}/perplexity/${name}_${dir}.json)
    add_test(NAME families_perplexity_${name}_${dir}
             COMMAND h2tune eval --model-dir ${_fam_models}/${name}/${dir} --tokenizer ${_fam_tok}
                     --perplexity ${_fam_text} --dtype ${type} --json ${_json} --threads 1)
    set_tests_properties(families_perplexity_${name}_${dir} PROPERTIES LABELS "reference"
                         FIXTURES_REQUIRED "model_fixtures;tokenizer_fixture" FIXTURES_SETUP families_perplexity_${name}_${dir}
                         TIMEOUT 300 PASS_REGULAR_EXPRESSION "mean NLL [0-9.]+  perplexity [0-9.]+.*token log-probabilities in")
    list(APPEND _cases --case ${_json} ${_fam_models}/${name}/${dir} ${type} ${tolerance})
  endforeach()
  add_test(NAME families_reference_perplexity_${name}
           COMMAND ${H2TUNE_REFENV_PYTHON} ${_fam_src}/compare_families.py ${_cases})
  set_tests_properties(families_reference_perplexity_${name} PROPERTIES LABELS "reference" ENVIRONMENT "${_fam_pyenv}"
                       FIXTURES_REQUIRED "families_perplexity_${name}_f32;families_perplexity_${name}_bf16"
                       TIMEOUT 300)
endforeach()

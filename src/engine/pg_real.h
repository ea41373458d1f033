/* pg_real.h: the element type of the engine's tensors. The library is built with pg_real = float
 * (the CPU reference and the engine interface are fp32). The same sources of the ops, the tape
 * and the model are also compiled with PG_REAL_F64 defined into a second, test-only library in
 * which pg_real = double and every public name carries the suffix _f64, so the gradient tests can
 * take finite differences in fp64 of exactly the code that runs in fp32 (spec/engine.md §5). */
#ifndef PG_REAL_H
#define PG_REAL_H

#ifdef PG_REAL_F64
typedef double pg_real;
#define PG_REAL_NAME "f64"
/* ops */
#define pg_bf16_round pg_bf16_round_f64
/* engine */
#define pg_engine_kind_name pg_engine_kind_name_f64
#define pg_engine_kind_parse pg_engine_kind_parse_f64
#define pg_engine_cpu pg_engine_cpu_f64
#define pg_engine_destroy pg_engine_destroy_f64
#define pg_engine_enter pg_engine_enter_f64
#define pg_engine_alloc pg_engine_alloc_f64
#define pg_engine_free pg_engine_free_f64
#define pg_engine_upload pg_engine_upload_f64
#define pg_engine_download pg_engine_download_f64
#define pg_engine_zero pg_engine_zero_f64
#define pg_engine_copy pg_engine_copy_f64
#define pg_engine_dequant pg_engine_dequant_f64
#define pg_engine_scratch pg_engine_scratch_f64
#define pg_engine_scratch_try pg_engine_scratch_try_f64
#define pg_engine_fail pg_engine_fail_f64
#define pg_engine_failed pg_engine_failed_f64
#define pg_engine_sync pg_engine_sync_f64
#define pg_ops_cpu_table pg_ops_cpu_table_f64
/* optimizer ops */
#define pg_ops_cpu_optim pg_ops_cpu_optim_f64
#define pg_ns_coeffs pg_ns_coeffs_f64
#define pg_ns_scratch_floats pg_ns_scratch_floats_f64
#define pg_newton_schulz pg_newton_schulz_f64
#define pg_muon_scratch_floats pg_muon_scratch_floats_f64
#define pg_muon_apply pg_muon_apply_f64
/* tape */
#define pg_tape_create pg_tape_create_f64
#define pg_tape_free pg_tape_free_f64
#define pg_tape_reset pg_tape_reset_f64
#define pg_tape_status pg_tape_status_f64
#define pg_tape_fail pg_tape_fail_f64
#define pg_tape_grad pg_tape_grad_f64
#define pg_tape_engine pg_tape_engine_f64
#define pg_tape_sync pg_tape_sync_f64
#define pg_tape_bytes pg_tape_bytes_f64
#define pg_tape_mark pg_tape_mark_f64
#define pg_tape_release pg_tape_release_f64
#define pg_tape_backward pg_tape_backward_f64
#define pg_tape_scratch pg_tape_scratch_f64
#define pg_tape_nodes pg_tape_nodes_f64
#define pg_t_new pg_t_new_f64
#define pg_t_keep pg_t_keep_f64
#define pg_t_const pg_t_const_f64
#define pg_t_view pg_t_view_f64
#define pg_t_param pg_t_param_f64
#define tp_matmul tp_matmul_f64
#define tp_rmsnorm tp_rmsnorm_f64
#define tp_matmul_grouped tp_matmul_grouped_f64
#define tp_rope tp_rope_f64
#define tp_attention tp_attention_f64
#define tp_relu2 tp_relu2_f64
#define tp_leaky_relu2 tp_leaky_relu2_f64
#define tp_rowgate tp_rowgate_f64
#define tp_rowmul tp_rowmul_f64
#define tp_chanmul tp_chanmul_f64
#define tp_chanlerp tp_chanlerp_f64
#define tp_xsa tp_xsa_f64
#define tp_softcap tp_softcap_f64
#define tp_tanh tp_tanh_f64
#define tp_scale tp_scale_f64
#define tp_add tp_add_f64
#define tp_copy_into tp_copy_into_f64
#define tp_embed tp_embed_f64
#define tp_cols tp_cols_f64
#define tp_expand tp_expand_f64
#define tp_ce tp_ce_f64
#define tp_bf16 tp_bf16_f64
#define tp_rope_bf16 tp_rope_bf16_f64
#define tp_attention_bf16 tp_attention_bf16_f64
/* model */
#define pg_model_create pg_model_create_f64
#define pg_model_create_on pg_model_create_on_f64
#define pg_model_free pg_model_free_f64
#define pg_model_arch pg_model_arch_f64
#define pg_model_tensor_count pg_model_tensor_count_f64
#define pg_model_tensor pg_model_tensor_f64
#define pg_model_find pg_model_find_f64
#define pg_model_data pg_model_data_f64
#define pg_model_data_engine pg_model_data_engine_f64
#define pg_model_grad pg_model_grad_f64
#define pg_model_param_count pg_model_param_count_f64
#define pg_model_params pg_model_params_f64
#define pg_model_params_read pg_model_params_read_f64
#define pg_model_bind pg_model_bind_f64
#define pg_model_to_host pg_model_to_host_f64
#define pg_model_engine pg_model_engine_f64
#define pg_model_params_engine pg_model_params_engine_f64
#define pg_model_grads_engine pg_model_grads_engine_f64
#define pg_lora_params_engine pg_lora_params_engine_f64
#define pg_lora_grads_engine pg_lora_grads_engine_f64
#define pg_model_grads pg_model_grads_f64
#define pg_model_enable_grads pg_model_enable_grads_f64
#define pg_model_zero_grads pg_model_zero_grads_f64
#define pg_model_set_trainable pg_model_set_trainable_f64
#define pg_model_trainable pg_model_trainable_f64
#define pg_model_freeze_blocks pg_model_freeze_blocks_f64
#define pg_model_init pg_model_init_f64
#define pg_model_init_random pg_model_init_random_f64
#define pg_model_check_finite pg_model_check_finite_f64
#define pg_model_copy_params pg_model_copy_params_f64
#define pg_model_forward pg_model_forward_f64
#define pg_model_set_observer pg_model_set_observer_f64
#define pg_model_set_loops pg_model_set_loops_f64
#define pg_model_loops pg_model_loops_f64
#define pg_model_set_precision pg_model_set_precision_f64
#define pg_model_precision pg_model_precision_f64
#define pg_precision_name pg_precision_name_f64
#define pg_precision_parse pg_precision_parse_f64
#define pg_model_backward pg_model_backward_f64
#define pg_model_segments pg_model_segments_f64
#define pg_model_bigram_hash pg_model_bigram_hash_f64
#define pg_model_rope_base pg_model_rope_base_f64
#define pg_lora_create pg_lora_create_f64
#define pg_lora_free pg_lora_free_f64
#define pg_lora_reset pg_lora_reset_f64
#define pg_lora_zero_grads pg_lora_zero_grads_f64
#define pg_lora_params pg_lora_params_f64
#define pg_lora_grads pg_lora_grads_f64
#define pg_lora_count pg_lora_count_f64
#define pg_lora_row_span pg_lora_row_span_f64
#define pg_lora_place pg_lora_place_f64
#define pg_lora_targets_parse pg_lora_targets_parse_f64
#define pg_lora_targets_name pg_lora_targets_name_f64
#else
typedef float pg_real;
#define PG_REAL_NAME "f32"
#endif

#endif

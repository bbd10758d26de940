def dispatch_cg_and_sync_dp(cudagraph_manager, num_reqs, num_tokens, uniform_token_count, dp_size, dp_rank,
                            max_query_len=None, need_eager=False, num_active_loras=0, parallel_config=None,
                            allow_ubatching=False, uniform_decode=False, allow_skip_drafts=False,
                            dp_sync_state=None):
    desc = cudagraph_manager.dispatch(num_reqs, num_tokens, uniform_token_count, num_active_loras, max_query_len)
    return desc, None

/* residency.c — the residency manager: every model is on disk, in the host cache, loading,
 * resident or evicting. Loads and unloads run on the loader thread (so resident models keep
 * being served); the executor thread decides them: a model with demand (queued tasks, a load
 * command, a pin) is loaded when the pool has room, after evicting victims chosen by policy.c;
 * idle models past keep_alive are unloaded; a pipeline's next model is prefetched when it fits
 * without evicting anything. Weights are loaded once per model, whatever number of agents
 * share it.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec_internal.h"
#include "policy.h"

#define NX__DEFAULT_GBPS 2.0 /* reload estimate before any load was observed */
/* A model whose tasks waited this long for room that only running sequences hold makes the
 * models in its way drain (no new sequences) so that they become evictable: without it, a
 * model with a steady stream of tasks keeps its place forever and the other one's tasks
 * time out. Long enough that short bursts still batch; short next to a task timeout. */
#define NX__SWAP_WAIT_MS 2000

static uint64_t round_up(uint64_t bytes, uint64_t chunk)
{
    return chunk ? (bytes + chunk - 1) / chunk * chunk : bytes;
}

static uint64_t pool_chunk(nx_exec_t *exec)
{
    nx_pool_stats_t stats;
    nx_pool_stats(exec->pool, &stats);
    return stats.chunk_bytes;
}

/* Weights, KV, tokenizer and chat kind of one model; a problem is kept in m->error (its tasks
 * fail with model_error) rather than refusing the whole executor. */
static void read_model(nx_exec_t *exec, nx__model_t *m)
{
    nx_err_t err = {0};
    uint64_t chunk = pool_chunk(exec);
    nx_st_t *st = nx_st_open(m->path, &err);
    if (st) {
        m->weight_bytes = round_up(nx_st_data_bytes(st) + 4096ull * nx_st_file_count(st), chunk);
        nx_st_destroy(&st);
    }
    if (err.code == NX_OK && nx_config_load(m->path, &m->config, &err) == NX_OK) {
        const nx_model_config_t *c = &m->config;
        m->kv_bytes = round_up(nx_kv_bytes(c, nx_pool_device(exec->pool), exec->conf->context),
                               chunk);
        m->engine_bytes = round_up(nx_engine_scratch_bytes(c, nx_pool_device(exec->pool)), chunk);
    }
    if (err.code == NX_OK && (m->tok = nx_tokenizer_load(m->path, &err)))
        m->chat_kind = nx_chat_detect(m->tok);
    if (err.code != NX_OK) {
        snprintf(m->error, sizeof m->error, "model '%s': %.400s", m->name, err.msg);
        nx_log(NX_LOG_WARN, "%s (its tasks will fail with model_error)", m->error);
    }
}

/* Pool bytes m takes while resident, without its sequences' KV: weights and engine. */
static uint64_t resident_bytes(const nx__model_t *m)
{
    return m->weight_bytes + m->engine_bytes;
}

/* Agents share a model when their models resolve to the same path (Org/Name and
 * Org/Name@main alike). A hub model is named by the first agent's `model:` (a snapshot
 * folder's own name is a commit hash); any other by its folder or file name. */
static nx__model_t *model_for(nx_exec_t *exec, const nx_agent_conf_t *agent)
{
    const char *path = agent->model_path ? agent->model_path : agent->model;
    for (size_t i = 0; i < exec->model_count; i++)
        if (strcmp(exec->models[i].path, path) == 0)
            return &exec->models[i];
    nx__model_t *m = &exec->models[exec->model_count++];
    snprintf(m->path, sizeof m->path, "%s", path);
    snprintf(m->source, sizeof m->source, "%s", nx_ms_source_name(agent->model_source));
    char copy[512];
    snprintf(copy, sizeof copy, "%s", path);
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = '\0';
    bool hub = agent->model_path && (agent->model_source == NX_MS_PULLED ||
                                     agent->model_source == NX_MS_HF_CACHE);
    snprintf(m->name, sizeof m->name, "%s", hub ? agent->model : basename(copy));
    m->last_swap_ms = -1;
    m->idle_since_ns = nx_now_ns();
    m->keep_alive_s = UINT32_MAX; /* lowered below: the max of its agents, 0 = forever */
    m->priority = -1000;
    return m;
}

static void bind_agent(nx__model_t *m, const nx_agent_conf_t *agent)
{
    m->agent_refs++;
    m->pinned = m->pinned || agent->pin;
    if (agent->priority > m->priority)
        m->priority = agent->priority;
    if (agent->keep_alive_s == 0)
        m->keep_alive_s = 0;
    else if (m->keep_alive_s && (m->keep_alive_s == UINT32_MAX ||
                                 agent->keep_alive_s > m->keep_alive_s))
        m->keep_alive_s = agent->keep_alive_s;
}

int nx__res_init(nx_exec_t *exec, nx_err_t *err)
{
    const nx_nexus_conf_t *conf = exec->conf;
    exec->models = calloc(conf->agent_count + 1, sizeof *exec->models);
    exec->queues = calloc(conf->agent_count + 1, sizeof *exec->queues);
    if (!exec->models || !exec->queues)
        return nx_err_set(err, NX_ENOMEM, "executor: out of memory for %zu agents",
                          conf->agent_count);
    for (size_t i = 0; i < conf->agent_count; i++) {
        const nx_agent_conf_t *agent = &conf->agents[i];
        nx__model_t *m = model_for(exec, agent);
        if (m->agent_refs == 0)
            read_model(exec, m);
        bind_agent(m, agent);
        exec->queues[exec->queue_count++] = (nx__agentq_t){.agent = agent, .model = m};
    }
    nx_pool_stats_t pool;
    nx_pool_stats(exec->pool, &pool);
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        uint64_t need = resident_bytes(m) + m->kv_bytes;
        if (need > pool.total_bytes)
            return nx_err_set(err, NX_EPOOLFULL, "model '%s' needs %llu bytes (weights, engine "
                              "and the KV cache of one sequence of %u tokens), more than the "
                              "pool's %llu bytes", m->name, (unsigned long long)need, conf->context,
                              (unsigned long long)pool.total_bytes);
        m->state = exec->cache && nx_hostcache_contains(exec->cache, m->path) ? NX__HOST
                                                                               : NX__DISK;
        if (m->pinned && !m->error[0]) {
            m->want_load = true;
            m->wanted_since_ns = nx_now_ns();
        }
    }
    return NX_OK;
}

void nx__res_fini(nx_exec_t *exec)
{
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        nx_engine_destroy(&m->engine);
        if (m->weights)
            nx_loader_unload(exec->loader, &m->weights, false);
        nx__typed_vocabs_free(m);
        nx_tokenizer_destroy(&m->tok);
        free(m->cmds);
    }
    free(exec->models);
    free(exec->queues);
    exec->models = NULL;
    exec->queues = NULL;
    exec->model_count = exec->queue_count = 0;
}

/* ---- the loader thread -------------------------------------------------------------------- */

static void loader_do(nx_exec_t *exec, nx__msg_t *job)
{
    nx_err_t err = {0};
    uint64_t t0 = nx_now_ns();
    nx__model_t *m = job->target;
    if (job->kind == NX__MSG_LOADED) {
        nx_load_stats_t stats = {0};
        job->weights = nx_loader_load(exec->loader, m->path, m->name, &stats, &err);
        if (job->weights) {
            nx_engine_opts_t eopts = {.max_context = exec->conf->context};
            job->engine = nx_engine_new(m->path, job->weights, exec->pool, &eopts, &err);
            if (!job->engine)
                nx_loader_unload(exec->loader, &job->weights, false);
        }
        job->rc = job->engine ? NX_OK : (err.code ? err.code : NX_EIO);
        snprintf(job->error, sizeof job->error, "%s", err.msg);
        job->gbps = stats.gbps;
    } else {
        nx_loader_unload(exec->loader, &job->weights, exec->cache != NULL);
    }
    job->ms = (double)(nx_now_ns() - t0) / 1e6;
}

/* After a load the loader thread backs the new weights with 2 MiB pages (nx_region_collapse),
 * a piece at a time, and only while its inbox is empty and the executor steps nothing: the
 * collapse takes no core from a task (the swap's own task first, which is decoding right after
 * the load) and never delays a load; a task or job that arrives meanwhile shares the cores
 * with one piece at most. While sequences run it waits, checking every NX__COLLAPSE_POLL_MS. An
 * eviction of those weights ends it first; the next load replaces it. On the VM of
 * bench/RESULTS.md it costs ~1-2.5 s of one core per GiB, once per load, for +4-11% of batch-1
 * decode under load, and nothing measurable on a quiet machine (bench/RESULTS.md, "2 MiB
 * pages"), so it is off unless NEXUS_HUGEPAGES=on (CPU pools: a device pool has nothing to
 * collapse). */
#define NX__COLLAPSE_PIECE (32ull << 20)
#define NX__COLLAPSE_POLL_MS 20

typedef struct collapse_job {
    nx_model_t *weights; /* NULL: nothing to do */
    uint64_t done, huge;
    uint64_t started_ns;
} collapse_job_t;

static bool hugepages_wanted(void)
{
    const char *v = getenv("NEXUS_HUGEPAGES");
    return v && strcmp(v, "on") == 0;
}

/* One piece; false when the whole region is done (logged at debug). */
static bool collapse_piece(collapse_job_t *c)
{
    const nx_region_t *region = nx_model_region(c->weights);
    uint64_t bytes = nx_region_bytes(region);
    c->huge += nx_region_collapse(region, c->done, NX__COLLAPSE_PIECE);
    c->done += NX__COLLAPSE_PIECE;
    if (c->done < bytes)
        return true;
    nx_log(NX_LOG_DEBUG, "loader: %s in 2 MiB pages: %llu of %llu MiB, in %.2f s",
           nx_region_owner(region), (unsigned long long)(c->huge >> 20),
           (unsigned long long)(bytes >> 20), (double)(nx_now_ns() - c->started_ns) / 1e9);
    c->weights = NULL;
    return false;
}

static void *loader_main(void *arg)
{
    nx_exec_t *exec = arg;
    collapse_job_t collapse = {0};
    bool hugepages = hugepages_wanted();
    for (;;) {
        if (collapse.weights && nx_mailbox_count(exec->loader_inbox) == 0 &&
            !atomic_load_explicit(&exec->stepping, memory_order_relaxed) &&
            collapse_piece(&collapse))
            continue;
        nx_mailbox_wait(exec->loader_inbox, collapse.weights ? NX__COLLAPSE_POLL_MS : -1);
        nx__msg_t *job = nx_mailbox_pop(exec->loader_inbox);
        if (!job)
            continue;
        if (job->kind == NX__MSG_STOP) {
            nx__msg_free(job);
            return NULL;
        }
        if (job->kind != NX__MSG_LOADED && job->weights == collapse.weights)
            collapse.weights = NULL; /* about to be unloaded */
        loader_do(exec, job);
        if (job->kind == NX__MSG_LOADED && job->rc == NX_OK && hugepages)
            collapse = (collapse_job_t){.weights = job->weights, .started_ns = nx_now_ns()};
        while (!nx_mailbox_push(exec->inbox, job)) /* out of memory: the result must arrive */
            nx_mailbox_wait(exec->loader_inbox, 10);
    }
}

int nx__res_loader_start(nx_exec_t *exec, nx_err_t *err)
{
    if (pthread_create(&exec->loader_thread, NULL, loader_main, exec) != 0)
        return nx_err_set(err, NX_ENOMEM, "executor: cannot start the loader thread");
    exec->loader_started = true;
    return NX_OK;
}

/* Finish the queued loader jobs, then stop the thread (results stay in the inbox). */
void nx__res_loader_stop(nx_exec_t *exec)
{
    if (!exec->loader_started)
        return;
    nx__msg_t *stop = nx__msg_new(NX__MSG_STOP);
    while (!stop || !nx_mailbox_push(exec->loader_inbox, stop))
        stop = stop ? stop : nx__msg_new(NX__MSG_STOP);
    pthread_join(exec->loader_thread, NULL);
    exec->loader_started = false;
}

static void post_loader(nx_exec_t *exec, nx__msg_kind_t kind, nx__model_t *m,
                        nx_model_t *weights)
{
    nx__msg_t *job = nx__msg_new(kind);
    while (!job)
        job = nx__msg_new(kind); /* the model's state depends on it; out of memory is brief */
    job->target = m;
    job->weights = weights;
    while (!nx_mailbox_push(exec->loader_inbox, job))
        ;
    exec->loader_jobs++;
}

/* ---- decisions ---------------------------------------------------------------------------- */

static void start_evict(nx_exec_t *exec, nx__model_t *m, const char *reason)
{
    nx_engine_destroy(&m->engine);
    nx_model_t *weights = m->weights;
    m->weights = NULL;
    m->state = NX__EVICTING;
    m->evict_reason = reason;
    nx__report_model(exec, m, 0, reason);
    nx__sched_model_left(exec, m);
    post_loader(exec, NX__MSG_EVICTED, m, weights);
}

static void start_load(nx_exec_t *exec, nx__model_t *m, const char *reason)
{
    m->state = NX__LOADING;
    m->load_started_ns = nx_now_ns();
    m->load_reason = reason;
    exec->loading = m;
    nx__report_model(exec, m, 0, reason);
    post_loader(exec, NX__MSG_LOADED, m, NULL);
}

uint64_t nx__res_free_bytes(nx_exec_t *exec)
{
    nx_pool_stats_t stats;
    nx_pool_stats(exec->pool, &stats);
    uint64_t held = exec->loading ? resident_bytes(exec->loading) : 0;
    return stats.free_bytes > held ? stats.free_bytes - held : 0;
}

static double reload_estimate_ms(const nx_exec_t *exec, const nx__model_t *m)
{
    if (m->reload_ms > 0)
        return m->reload_ms;
    double gbps = exec->last_gbps > 0 ? exec->last_gbps : NX__DEFAULT_GBPS;
    return (double)m->weight_bytes / (gbps * 1e9) * 1e3;
}

/* The policy's view of every model; `except` (the one to make room for) is not a candidate. */
static void policy_table(nx_exec_t *exec, const nx__model_t *except, nx_policy_model_t *t)
{
    uint64_t now = nx_now_ns();
    for (size_t i = 0; i < exec->model_count; i++) {
        const nx__model_t *m = &exec->models[i];
        t[i] = (nx_policy_model_t){
            .resident = m->state == NX__RESIDENT && m != except,
            .pinned = m->pinned, .running = m->running_count, .queued = m->queued,
            .priority = m->priority, .bytes = resident_bytes(m),
            .reload_ms = reload_estimate_ms(exec, m),
            .recent_use = m->recent_use * nx_policy_decay(now - m->recent_at_ns),
            .last_used_ns = m->last_used_ns};
    }
}

/* The policy's victims for `need` bytes as if no sequence were running (their KV counted as
 * free): NX_EPOOLFULL when even then only pinned models stand in the way. */
static int victims_when_drained(nx_exec_t *exec, const nx__model_t *target, uint64_t need,
                                uint64_t free, size_t *victims, size_t *n)
{
    nx_policy_model_t t[exec->model_count + 1];
    policy_table(exec, target, t);
    for (size_t i = 0; i < exec->model_count; i++) {
        free += (uint64_t)exec->models[i].running_count * exec->models[i].kv_bytes;
        t[i].running = 0;
    }
    return nx_policy_victims(exec->opts.policy, t, exec->model_count, free, need, victims, n);
}

/* True when nothing but pinned models keeps `need` bytes from ever being free. */
static bool never_fits(nx_exec_t *exec, const nx__model_t *target, uint64_t need, uint64_t free)
{
    size_t victims[exec->model_count + 1], n = 0;
    for (size_t i = 0; i < exec->model_count; i++)
        if (exec->models[i].state == NX__LOADING && &exec->models[i] != target)
            return false;
    return victims_when_drained(exec, target, need, free, victims, &n) == NX_EPOOLFULL;
}

/* m's tasks have waited past NX__SWAP_WAIT_MS: the models the policy would evict for it once
 * their sequences ended stop admitting new ones (running ones finish, queued ones wait), so
 * that they drain and make_room can evict them. Counting every running KV as free may drain
 * too few at first; the next plan, still starved, drains the rest. */
static void drain_for(nx_exec_t *exec, nx__model_t *m, uint64_t need)
{
    size_t victims[exec->model_count + 1], n = 0;
    if (victims_when_drained(exec, m, need, nx__res_free_bytes(exec), victims, &n) != NX_OK)
        return;
    for (size_t i = 0; i < n; i++)
        exec->models[victims[i]].draining = true;
}

static void answer_cmds(nx_exec_t *exec, nx__model_t *m, nx_op_t op, const char *code,
                        const char *message)
{
    size_t kept = 0;
    for (size_t i = 0; i < m->cmd_count; i++) {
        if (m->cmds[i].op == op)
            nx__report_command(exec, m->cmds[i].id, code, message, m);
        else
            m->cmds[kept++] = m->cmds[i];
    }
    m->cmd_count = kept;
}

static void give_up(nx_exec_t *exec, nx__model_t *m, const char *message)
{
    nx__sched_fail_model(exec, m, "model_error", message);
    answer_cmds(exec, m, NX_OP_LOAD, "model_error", message);
    m->want_load = false;
    m->wanted_since_ns = 0;
}

/* Make room for `need_min` (better `need_full`) bytes for m, then run `then` (load or nothing).
 * Returns true when the room is there or being made. */
static bool make_room(nx_exec_t *exec, nx__model_t *m, uint64_t need_min, uint64_t need_full)
{
    nx_policy_model_t t[exec->model_count + 1];
    size_t victims[exec->model_count + 1], n = 0;
    uint64_t free = nx__res_free_bytes(exec);
    policy_table(exec, m, t);
    nx_policy_t policy = exec->opts.policy;
    int rc = nx_policy_victims(policy, t, exec->model_count, free, need_full, victims, &n);
    if (rc != NX_OK)
        rc = nx_policy_victims(policy, t, exec->model_count, free, need_min, victims, &n);
    if (rc != NX_OK) {
        if (never_fits(exec, m, need_min, free)) {
            char msg[512];
            snprintf(msg, sizeof msg, "model '%s' needs %llu bytes of the pool, but pinned "
                     "models leave too little of its %llu free bytes", m->name,
                     (unsigned long long)need_min, (unsigned long long)free);
            give_up(exec, m, msg);
        }
        return false;
    }
    for (size_t i = 0; i < n; i++)
        start_evict(exec, &exec->models[victims[i]], "pressure");
    return true;
}

static void keep_alive(nx_exec_t *exec, uint64_t now)
{
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        uint64_t limit_ns = (uint64_t)m->keep_alive_s * 1000000000ull;
        if (m->state == NX__RESIDENT && !m->pinned && m->keep_alive_s && !m->queued &&
            !m->running_count && !m->want_load && now - m->idle_since_ns > limit_ns)
            start_evict(exec, m, "keep_alive");
    }
}

/* The non-resident model whose demand is oldest, or NULL. */
static nx__model_t *next_demand(nx_exec_t *exec)
{
    nx__model_t *best = NULL;
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        if ((m->state != NX__DISK && m->state != NX__HOST) || (!m->queued && !m->want_load))
            continue;
        if (!m->wanted_since_ns)
            m->wanted_since_ns = nx_now_ns();
        if (!best || m->wanted_since_ns < best->wanted_since_ns)
            best = m;
    }
    return best;
}

/* A resident model with queued tasks, none running, and too little pool for one KV. */
static void kv_pressure(nx_exec_t *exec)
{
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        if (m->state == NX__RESIDENT && m->queued && !m->running_count &&
            nx__res_free_bytes(exec) < m->kv_bytes && make_room(exec, m, m->kv_bytes,
                                                                m->kv_bytes))
            return;
    }
}

static void prefetch(nx_exec_t *exec)
{
    for (size_t i = 0; i < exec->model_count; i++) {
        nx__model_t *m = &exec->models[i];
        if (!m->prefetch)
            continue;
        m->prefetch = false;
        if ((m->state == NX__DISK || m->state == NX__HOST) && !m->error[0] &&
            nx__res_free_bytes(exec) >= resident_bytes(m) + m->kv_bytes) {
            start_load(exec, m, "prefetch");
            return;
        }
    }
}

void nx__res_plan(nx_exec_t *exec)
{
    keep_alive(exec, nx_now_ns());
    if (exec->loader_jobs)
        return; /* one plan at a time: the loader's queue decides the pool's next state */
    for (size_t i = 0; i < exec->model_count; i++)
        exec->models[i].draining = false; /* decided again below while a model starves */
    nx__model_t *m = next_demand(exec);
    if (m) {
        if (m->error[0]) {
            give_up(exec, m, m->error);
            return;
        }
        uint32_t seqs = m->queued < exec->conf->max_batch ? m->queued : exec->conf->max_batch;
        uint64_t need_min = resident_bytes(m) + m->kv_bytes;
        uint64_t need_full = resident_bytes(m) + (uint64_t)(seqs ? seqs : 1) * m->kv_bytes;
        uint64_t now = nx_now_ns();
        if (make_room(exec, m, need_min, need_full))
            start_load(exec, m, m->queued ? "task" : "request");
        else if (m->queued && m->wanted_since_ns &&
                 now - m->wanted_since_ns > NX__SWAP_WAIT_MS * 1000000ull)
            drain_for(exec, m, need_min);
        return;
    }
    kv_pressure(exec);
    if (!exec->loader_jobs)
        prefetch(exec);
}

/* ---- loader results ----------------------------------------------------------------------- */

static nx__mstate_t off_state(nx_exec_t *exec, const nx__model_t *m)
{
    return exec->cache && nx_hostcache_contains(exec->cache, m->path) ? NX__HOST : NX__DISK;
}

void nx__res_on_loaded(nx_exec_t *exec, nx__msg_t *msg)
{
    nx__model_t *m = msg->target;
    exec->loader_jobs--;
    exec->loading = NULL;
    if (msg->rc != NX_OK) {
        m->state = off_state(exec, m);
        nx__report_model(exec, m, msg->ms, m->load_reason);
        char text[1100];
        snprintf(text, sizeof text, "model '%s' could not be loaded: %.900s", m->name, msg->error);
        nx_log(NX_LOG_ERROR, "%s", text);
        /* Known broken from now on: new tasks are refused at once (the router asks
         * nx_exec_model_broken) instead of each paying for a load that fails the same way;
         * a load or pin command tries again. */
        snprintf(m->load_error, sizeof m->load_error, "%s (a `load` of it tries again)", text);
        give_up(exec, m, text);
        return;
    }
    m->load_error[0] = '\0';
    m->weights = msg->weights;
    m->engine = msg->engine;
    msg->weights = NULL;
    msg->engine = NULL;
    m->state = NX__RESIDENT;
    m->loads++;
    m->last_swap_ms = m->reload_ms = msg->ms;
    if (msg->gbps > 0)
        exec->last_gbps = msg->gbps;
    m->idle_since_ns = nx_now_ns();
    m->want_load = false;
    m->wanted_since_ns = 0;
    nx__sched_model_resident(exec, m);
    nx__report_model(exec, m, msg->ms, m->load_reason);
    answer_cmds(exec, m, NX_OP_LOAD, NULL, NULL);
}

void nx__res_on_evicted(nx_exec_t *exec, nx__msg_t *msg)
{
    nx__model_t *m = msg->target;
    exec->loader_jobs--;
    m->state = off_state(exec, m);
    nx__report_model(exec, m, msg->ms, m->evict_reason);
    answer_cmds(exec, m, NX_OP_EVICT, NULL, NULL);
    if ((m->queued || m->want_load) && !m->wanted_since_ns)
        m->wanted_since_ns = nx_now_ns();
}

/* ---- commands, prefetch, use -------------------------------------------------------------- */

nx__model_t *nx__res_find(nx_exec_t *exec, const char *name)
{
    for (size_t i = 0; i < exec->model_count; i++)
        if (strcmp(exec->models[i].name, name) == 0 || strcmp(exec->models[i].path, name) == 0)
            return &exec->models[i];
    for (size_t i = 0; i < exec->queue_count; i++)
        if (strcmp(exec->queues[i].agent->model, name) == 0)
            return exec->queues[i].model;
    return NULL;
}

static void add_cmd(nx__model_t *m, nx_op_t op, uint64_t id)
{
    if (m->cmd_count == m->cmd_cap) {
        size_t cap = m->cmd_cap ? m->cmd_cap * 2 : 4;
        nx__pending_cmd_t *p = realloc(m->cmds, cap * sizeof *p);
        if (!p)
            return; /* answered never; logged */
        m->cmds = p;
        m->cmd_cap = cap;
    }
    m->cmds[m->cmd_count++] = (nx__pending_cmd_t){id, op};
}

static void command_evict(nx_exec_t *exec, nx__model_t *m, uint64_t id)
{
    char msg[256];
    if (m->running_count || m->pinned || m->state == NX__LOADING) {
        if (m->running_count)
            snprintf(msg, sizeof msg, "model '%s' has %u running tasks", m->name,
                     m->running_count);
        else
            snprintf(msg, sizeof msg, "model '%s' is %s", m->name,
                     m->pinned ? "pinned (unpin it first)" : "loading");
        nx__report_command(exec, id, "busy", msg, m);
        return;
    }
    if (m->state == NX__RESIDENT)
        start_evict(exec, m, "request");
    if (m->state == NX__EVICTING)
        add_cmd(m, NX_OP_EVICT, id);
    else
        nx__report_command(exec, id, NULL, NULL, m);
}

void nx__res_command(nx_exec_t *exec, nx__msg_t *msg)
{
    nx__model_t *m = nx__res_find(exec, msg->model);
    char text[700];
    if (!m) {
        snprintf(text, sizeof text, "no model named '%s'", msg->model);
        nx__report_command(exec, msg->command_id, "unknown_model", text, NULL);
        return;
    }
    switch (msg->op) {
    case NX_OP_LOAD:
    case NX_OP_PIN:
        if (msg->op == NX_OP_PIN)
            m->pinned = true;
        if (m->state == NX__RESIDENT || msg->op == NX_OP_PIN)
            nx__report_command(exec, msg->command_id, NULL, NULL, m);
        else
            add_cmd(m, NX_OP_LOAD, msg->command_id);
        if (m->state != NX__RESIDENT && m->state != NX__LOADING) {
            m->want_load = true;
            if (!m->wanted_since_ns)
                m->wanted_since_ns = nx_now_ns();
        }
        break;
    case NX_OP_UNPIN:
        m->pinned = false;
        nx__report_command(exec, msg->command_id, NULL, NULL, m);
        break;
    case NX_OP_EVICT:
        command_evict(exec, m, msg->command_id);
        break;
    default:
        snprintf(text, sizeof text, "op %d is not a model command", (int)msg->op);
        nx__report_command(exec, msg->command_id, "internal", text, m);
    }
}

void nx__res_prefetch(nx_exec_t *exec, const char *model)
{
    nx__model_t *m = nx__res_find(exec, model);
    if (m && m->state != NX__RESIDENT && m->state != NX__LOADING)
        m->prefetch = true;
}

void nx__res_used(nx_exec_t *exec, nx__model_t *m)
{
    uint64_t now = nx_now_ns();
    m->recent_use = m->recent_use * nx_policy_decay(now - m->recent_at_ns) + 1;
    m->recent_at_ns = now;
    m->last_used_ns = now;
}

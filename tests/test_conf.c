/* test_conf.c — nexus/conf*.c on real files in a temporary folder: the shipped configs/ loading
 * against synthesized demo models, the rules that span files (duplicate names naming both files,
 * `next` naming no agent or looping, missing model folders, CURVE off loopback), relative paths,
 * the file hash, YAML details (duplicate keys, syntax and encoding errors, .yml files) and
 * nx_endpoint_is_loopback. Single-file field rules are judged against the JSON Schemas in
 * tests/test_conf_schema.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "conf.h"
#include "synth.h"

typedef struct fixture {
    char dir[64]; /* the temporary folder everything is written under */
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/nx-conf-test-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    *state = fx;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* fx->dir + "/" + rel, in a static rotation of buffers (tests use a few at a time). */
static const char *at(const fixture_t *fx, const char *rel)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", fx->dir, rel);
    return b;
}

static void mkdirs(const char *path)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

static void write_file(const fixture_t *fx, const char *rel, const char *fmt, ...)
{
    const char *path = at(fx, rel);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    mkdirs(dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

/* nexus.yaml at the top of the fixture with agents/ and models/ beside it. */
static void write_nexus(const fixture_t *fx, const char *extra)
{
    write_file(fx, "nexus.yaml", "home: home\nmodels: models\nagents: agents\n%s", extra);
    mkdirs(at(fx, "agents"));
}

static nx_nexus_conf_t *load_ok(const fixture_t *fx)
{
    nx_err_t err = {0};
    nx_nexus_conf_t *conf = NULL;
    int rc = nx_nexus_conf_load(at(fx, "nexus.yaml"), &conf, &err);
    if (rc != NX_OK)
        fail_msg("nx_nexus_conf_load: %s", err.msg);
    return conf;
}

/* Load, expect `code`, and return the message. */
static const char *load_fails(const fixture_t *fx, int code)
{
    static nx_err_t err;
    memset(&err, 0, sizeof err);
    nx_nexus_conf_t *conf = NULL;
    int rc = nx_nexus_conf_load(at(fx, "nexus.yaml"), &conf, &err);
    if (rc != code)
        fail_msg("expected %s, got %s: %s", nx_errname(code), nx_errname(rc), err.msg);
    assert_null(conf);
    return err.msg;
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("'%s' does not contain '%s'", text, part);
}

/* ---- the shipped configuration ----------------------------------------------------------------- */

static void synth_tiny(const char *dir, nx_synth_arch_t arch)
{
    nx_synth_opts_t opts = {.arch = arch, .preset = NX_SYNTH_TINY, .out_dir = dir, .seed = 1,
                            .dtype = NX_DT_BF16, .shards = 1};
    nx_err_t err = {0};
    if (nx_synth_model(&opts, NULL, &err) != NX_OK)
        fail_msg("nx_synth_model: %s", err.msg);
}

/* configs/nexus.yaml with home, models and agents pointed into the fixture. */
static void copy_shipped_config(const fixture_t *fx)
{
    FILE *in = fopen("configs/nexus.yaml", "r");
    assert_non_null(in);
    FILE *out = fopen(at(fx, "nexus.yaml"), "w");
    assert_non_null(out);
    char line[512];
    int replaced = 0;
    while (fgets(line, sizeof line, in)) {
        if (strncmp(line, "home:", 5) == 0 || strncmp(line, "models:", 7) == 0 ||
            strncmp(line, "agents:", 7) == 0) {
            replaced++;
            continue;
        }
        fputs(line, out);
    }
    fprintf(out, "home: var\nmodels: var/models\nagents: agents\n");
    fclose(in);
    fclose(out);
    assert_int_equal(replaced, 3);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp -r configs/agents '%s'", at(fx, "agents"));
    assert_int_equal(system(cmd), 0);
}

static void test_shipped_config_loads(void **state)
{
    fixture_t *fx = *state;
    copy_shipped_config(fx);
    const char *msg = load_fails(fx, NX_ENOTFOUND); /* no models yet */
    assert_contains(msg, "assistant.yaml:");
    assert_contains(msg, "field 'model'");
    assert_contains(msg, "demo-qwen3");
    synth_tiny(at(fx, "var/models/demo-qwen3"), NX_SYNTH_QWEN3);
    synth_tiny(at(fx, "var/models/demo-llama"), NX_SYNTH_LLAMA);

    nx_nexus_conf_t *conf = load_ok(fx);
    assert_string_equal(conf->home, at(fx, "var"));
    assert_string_equal(conf->models_dir, at(fx, "var/models"));
    assert_string_equal(conf->listen, "tcp://127.0.0.1:5555");
    assert_string_equal(conf->events, "tcp://127.0.0.1:5556");
    assert_int_equal(conf->device, NX_DEVICE_AUTO);
    assert_true(conf->pool_bytes == (2ull << 30));
    assert_int_equal(conf->host_cache_bytes, 256ull << 20);
    assert_int_equal(conf->max_message_bytes, 1u << 20);
    assert_null(conf->curve_secret_key);
    assert_int_equal(conf->agent_count, 5);
    assert_string_equal(conf->agents[0].name, "assistant"); /* sorted by name */
    assert_string_equal(conf->agents[1].name, "drafter");
    assert_string_equal(conf->agents[2].name, "editor");
    assert_string_equal(conf->agents[3].name, "filer");
    assert_string_equal(conf->agents[4].name, "triage");
    /* the typed pipeline: triage's answers under ticket.json, filer takes only those */
    const nx_agent_conf_t *triage = &conf->agents[4], *filer = &conf->agents[3];
    assert_non_null(triage->output_schema);
    assert_true(triage->output_strict);
    assert_string_equal(triage->next, "filer");
    assert_non_null(filer->input_schema);
    assert_string_equal(triage->output_schema, filer->input_schema);

    const nx_agent_conf_t *assistant = nx_nexus_conf_agent(conf, "assistant");
    const nx_agent_conf_t *drafter = nx_nexus_conf_agent(conf, "drafter");
    const nx_agent_conf_t *editor = nx_nexus_conf_agent(conf, "editor");
    assert_true(assistant == &conf->agents[0] && drafter && editor);
    assert_null(nx_nexus_conf_agent(conf, "nobody"));
    assert_true(assistant->memory_session && assistant->memory_turns == 20);
    assert_string_equal(assistant->model_path, at(fx, "var/models/demo-qwen3"));
    assert_string_equal(drafter->model_path, assistant->model_path); /* one model, two agents */
    assert_string_equal(drafter->next, "editor");
    assert_false(drafter->memory_session);
    assert_int_equal(drafter->generation.stop_count, 1);
    assert_string_equal(drafter->generation.stop[0], "\n\n\n");
    assert_int_equal(drafter->timeout_ms, 120000);
    assert_string_equal(editor->model_path, at(fx, "var/models/demo-llama"));
    assert_int_equal(editor->chat_template, NX_CHAT_LLAMA3);
    assert_null(editor->next);
    assert_int_equal(assistant->keep_alive_s, 600);
    nx_nexus_conf_free(&conf);
    assert_null(conf);
    nx_nexus_conf_free(&conf); /* safe twice */
}

/* ---- rules across files ------------------------------------------------------------------------ */

static void agent_file(const fixture_t *fx, const char *file, const char *name, const char *model,
                       const char *next)
{
    char rel[128];
    snprintf(rel, sizeof rel, "agents/%s", file);
    write_file(fx, rel, "# an agent\nname: %s\nmodel: %s\n%s%s%s", name, model,
               next ? "next: " : "", next ? next : "", next ? "\n" : "");
}

static void test_pipeline_and_models(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m1"));
    mkdirs(at(fx, "elsewhere/m2"));
    agent_file(fx, "a.yaml", "a", "m1", "b");
    agent_file(fx, "b.yml", "b", "../elsewhere/m2", NULL); /* a path: relative to agents/ */
    write_file(fx, "agents/notes.txt", "not an agent");
    write_file(fx, "agents/.hidden.yaml", "this: is skipped");
    nx_nexus_conf_t *conf = load_ok(fx);
    assert_int_equal(conf->agent_count, 2);
    assert_string_equal(conf->agents[0].model_path, at(fx, "models/m1"));
    assert_string_equal(conf->agents[1].model_path, at(fx, "elsewhere/m2"));
    assert_string_equal(conf->agents[1].source_path, at(fx, "agents/b.yml"));
    nx_nexus_conf_free(&conf);
}

static void test_unknown_next(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    agent_file(fx, "a.yaml", "a", "m", "ghost");
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "agents/a.yaml:4:7: field 'next'");
    assert_contains(msg, "'ghost'");
}

static void test_next_loops(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    agent_file(fx, "a.yaml", "a", "m", "b");
    agent_file(fx, "b.yaml", "b", "m", "c");
    agent_file(fx, "c.yaml", "c", "m", "a");
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "field 'next'");
    assert_contains(msg, "a -> b -> c -> a");

    agent_file(fx, "c.yaml", "c", "m", "c"); /* itself */
    agent_file(fx, "b.yaml", "b", "m", NULL);
    msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "agents/c.yaml:4:7:");
    assert_contains(msg, "c -> c");
}

static void test_duplicate_names(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    agent_file(fx, "one.yaml", "twin", "m", NULL);
    agent_file(fx, "two.yaml", "twin", "m", NULL);
    const char *msg = load_fails(fx, NX_EEXIST);
    assert_contains(msg, "agents/one.yaml:2:7");
    assert_contains(msg, "agents/two.yaml:2:7");
    assert_contains(msg, "'twin'");
}

static void test_missing_model_dir(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    agent_file(fx, "a.yaml", "a", "absent", NULL);
    const char *msg = load_fails(fx, NX_ENOTFOUND);
    assert_contains(msg, "agents/a.yaml:3:8: field 'model'");
    assert_contains(msg, at(fx, "models/absent"));
    write_file(fx, "models/absent", "a file, not a folder");
    load_fails(fx, NX_ENOTFOUND);

    /* on its own, an agent file is not checked against the models folder */
    nx_err_t err = {0};
    nx_agent_conf_t *agent = NULL;
    assert_int_equal(nx_agent_conf_load(at(fx, "agents/a.yaml"), &agent, &err), NX_OK);
    assert_null(agent->model_path);
    nx_agent_conf_free(&agent);
    assert_null(agent);
}

static void test_bad_agent_file_is_named(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    agent_file(fx, "a.yaml", "a", "m", NULL);
    write_file(fx, "agents/b.yaml", "name: b\nmodel: m\ngeneration:\n  top_k: -3\n");
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "agents/b.yaml:4:10: field 'generation.top_k'");
    assert_contains(msg, "got the number '-3'");

    write_file(fx, "agents/b.yaml", "name: b\nmodel: m\n  bad: indent\n");
    msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "agents/b.yaml:3:");
    assert_contains(msg, "YAML syntax error");
}

static void test_missing_agents_folder(void **state)
{
    fixture_t *fx = *state;
    write_file(fx, "nexus.yaml", "agents: nowhere\n");
    const char *msg = load_fails(fx, NX_ENOTFOUND);
    assert_contains(msg, at(fx, "nowhere"));
    write_file(fx, "other.yaml", "listen: tcp://127.0.0.1:1\n");
    nx_err_t err = {0};
    nx_nexus_conf_t *conf = NULL;
    assert_int_equal(nx_nexus_conf_load(at(fx, "missing.yaml"), &conf, &err), NX_ENOTFOUND);
    assert_contains(err.msg, "missing.yaml");
}

/* ---- files that must not be read as they are ------------------------------------------------- */

/* A FIFO named like an agent file: opening it for reading would wait for a writer forever. The
 * alarm turns such a hang into a failure of this test instead of a stuck suite. */
static void test_non_regular_agent_file(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    agent_file(fx, "a.yaml", "a", "m", NULL);
    assert_int_equal(mkfifo(at(fx, "agents/pipe.yaml"), 0600), 0);
    alarm(10);
    const char *msg = load_fails(fx, NX_EIO);
    alarm(0);
    assert_contains(msg, at(fx, "agents/pipe.yaml"));
    assert_contains(msg, "not a regular file (a FIFO)");

    remove(at(fx, "agents/pipe.yaml"));
    mkdirs(at(fx, "agents/dir.yaml"));
    msg = load_fails(fx, NX_EIO);
    assert_contains(msg, "agents/dir.yaml: not a regular file (a folder)");
    remove(at(fx, "agents/dir.yaml"));

    /* a link to a regular file is read like the file */
    write_file(fx, "elsewhere/b.yaml", "name: b\nmodel: ../models/m\n");
    assert_int_equal(symlink(at(fx, "elsewhere/b.yaml"), at(fx, "agents/b.yaml")), 0);
    nx_nexus_conf_t *conf = load_ok(fx);
    assert_int_equal(conf->agent_count, 2);
    nx_nexus_conf_free(&conf);
    /* and a link to a FIFO is refused like the FIFO */
    remove(at(fx, "agents/b.yaml"));
    assert_int_equal(mkfifo(at(fx, "elsewhere/pipe"), 0600), 0);
    assert_int_equal(symlink(at(fx, "elsewhere/pipe"), at(fx, "agents/b.yaml")), 0);
    alarm(10);
    msg = load_fails(fx, NX_EIO);
    alarm(0);
    assert_contains(msg, "agents/b.yaml: not a regular file (a FIFO)");
}

/* Nesting is capped while libyaml parses events, before it builds a document. */
static void test_nesting_is_capped(void **state)
{
    fixture_t *fx = *state;
    char deep[2 * 70 + 1];
    for (int levels = 63; levels <= 64; levels++) { /* + the top mapping: 64 and 65 */
        memset(deep, '[', (size_t)levels);
        memset(deep + levels, ']', (size_t)levels);
        deep[2 * levels] = '\0';
        write_file(fx, "agents/a.yaml", "name: a\nmodel: m\nstop_list: %s\n", deep);
        nx_err_t err = {0};
        nx_agent_conf_t *agent = NULL;
        assert_int_equal(nx_agent_conf_load(at(fx, "agents/a.yaml"), &agent, &err), NX_EFORMAT);
        if (levels == 63) /* deep, but within the cap: the field is what is wrong */
            assert_contains(err.msg, "field 'stop_list': unknown field");
        else
            assert_contains(err.msg, "agents/a.yaml:3:75: nested more than 64 levels deep");
    }
    /* the same cap for nexus.yaml, in block style too */
    char text[64 * 66 + 64] = "";
    size_t used = 0;
    for (int i = 0; i < 65; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "%*sk%d:\n", i, "", i);
    snprintf(text + used, sizeof text - used, "%*sv\n", 65, "");
    write_file(fx, "nexus.yaml", "%s", text);
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "nexus.yaml:65:65: nested more than 64 levels deep");
}

/* ---- nexus.yaml -------------------------------------------------------------------------------- */

static void test_defaults_resolve_next_to_the_file(void **state)
{
    fixture_t *fx = *state;
    write_file(fx, "etc/nexus.yaml", "{}\n");
    mkdirs(at(fx, "etc/agents"));
    nx_err_t err = {0};
    nx_nexus_conf_t *conf = NULL;
    assert_int_equal(nx_nexus_conf_load(at(fx, "etc/nexus.yaml"), &conf, &err), NX_OK);
    assert_string_equal(conf->home, at(fx, "etc/var"));
    assert_string_equal(conf->models_dir, at(fx, "etc/var/models"));
    assert_string_equal(conf->agents_dir, at(fx, "etc/agents"));
    assert_int_equal(conf->max_batch, 16);
    assert_int_equal(conf->context, 2048);
    assert_int_equal(conf->agent_count, 0);
    nx_nexus_conf_free(&conf);

    write_file(fx, "etc/nexus.yaml", "home: /srv/../srv/./nexus\npool: 1.5GiB\n");
    assert_int_equal(nx_nexus_conf_load(at(fx, "etc/nexus.yaml"), &conf, &err), NX_OK);
    assert_string_equal(conf->home, "/srv/nexus");
    assert_string_equal(conf->models_dir, "/srv/nexus/models");
    assert_int_equal(conf->pool_bytes, 3ull << 29);
    assert_true(conf->pool_fraction == 0);
    nx_nexus_conf_free(&conf);
}

static void test_curve_required_off_loopback(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "listen: tcp://0.0.0.0:5555\n");
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "nexus.yaml:4:9: field 'listen'");
    assert_contains(msg, "curve.secret_key");

    write_nexus(fx, "events: tcp://192.168.1.4:5556\n");
    msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "field 'events'");

    write_nexus(fx, "listen: tcp://0.0.0.0:5555\ncurve: {secret_key: k/server, clients: k/clients}\n");
    nx_nexus_conf_t *conf = load_ok(fx);
    assert_string_equal(conf->curve_secret_key, at(fx, "k/server"));
    assert_string_equal(conf->curve_clients, at(fx, "k/clients"));
    nx_nexus_conf_free(&conf);
}

static void test_duplicate_keys_and_encoding(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "max_batch: 4\nmax_batch: 8\n");
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "nexus.yaml:5:1: field 'max_batch': given twice (first at line 4)");

    write_file(fx, "agents/a.yaml", "name: a\nmodel: m\ngeneration: {seed: 1, seed: 2}\n");
    nx_err_t err = {0};
    nx_agent_conf_t *agent = NULL;
    assert_int_equal(nx_agent_conf_load(at(fx, "agents/a.yaml"), &agent, &err), NX_EFORMAT);
    assert_contains(err.msg, "field 'generation.seed': given twice");
    assert_null(agent);

    write_file(fx, "agents/a.yaml", "name: \"a\xff\"\nmodel: m\n");
    assert_int_equal(nx_agent_conf_load(at(fx, "agents/a.yaml"), &agent, &err), NX_EFORMAT);
    assert_contains(err.msg, "agents/a.yaml");
    assert_contains(err.msg, "YAML error");

    write_file(fx, "agents/a.yaml", "name: \"a\\0b\"\nmodel: m\n"); /* a NUL escape */
    assert_int_equal(nx_agent_conf_load(at(fx, "agents/a.yaml"), &agent, &err), NX_EFORMAT);
    assert_contains(err.msg, "field 'name'");

    write_file(fx, "agents/a.yaml", "name: a\nmodel: m\n---\nname: b\n");
    assert_int_equal(nx_agent_conf_load(at(fx, "agents/a.yaml"), &agent, &err), NX_EFORMAT);
    assert_contains(err.msg, "a.yaml:3:1: a second YAML document");
}

static void test_hash_is_xxh3_of_the_bytes(void **state)
{
    fixture_t *fx = *state;
    const char *text = "name: h\nmodel: m\n";
    write_file(fx, "h.yaml", "%s", text);
    nx_err_t err = {0};
    nx_agent_conf_t *agent = NULL;
    assert_int_equal(nx_agent_conf_load(at(fx, "h.yaml"), &agent, &err), NX_OK);
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)XXH3_64bits(text, strlen(text)));
    assert_string_equal(agent->hash, want);
    char first[17];
    memcpy(first, agent->hash, sizeof first);
    nx_agent_conf_free(&agent);
    write_file(fx, "h.yaml", "%s# a comment changes the hash\n", text);
    assert_int_equal(nx_agent_conf_load(at(fx, "h.yaml"), &agent, &err), NX_OK);
    assert_string_not_equal(agent->hash, first);
    nx_agent_conf_free(&agent);
}

static void test_agent_values(void **state)
{
    fixture_t *fx = *state;
    nx_err_t err = {0};
    nx_agent_conf_t *a = NULL;
    int rc = nx_agent_conf_load("tests/fixtures/conf/good/agent/full.yaml", &a, &err);
    if (rc != NX_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(a->name, "full-agent_1.0");
    assert_string_equal(a->system_prompt, "Line one.\nLine two.\n");
    assert_int_equal(a->chat_template, NX_CHAT_CHATML);
    assert_int_equal(a->thinking, 1);
    assert_int_equal(a->generation.max_tokens, 512);
    assert_true(a->generation.temperature == 1.25f && a->generation.top_k == 50);
    assert_true(a->generation.seed == UINT64_MAX);
    assert_int_equal(a->generation.stop_count, 2);
    assert_string_equal(a->generation.stop[1], "\n\n");
    assert_true(a->pin && a->priority == -100 && a->keep_alive_s == 3600);
    assert_true(a->memory_session && a->memory_turns == 7);
    assert_int_equal(a->queue_limit, 100000);
    assert_int_equal(a->timeout_ms, 7u * 86400 * 1000);
    assert_int_equal(a->tool_count, 2);
    assert_string_equal(a->tools[0], "searcher");
    assert_string_equal(a->tools[1], "calc");
    assert_int_equal(a->tool_steps, 3);
    assert_int_equal(nx_sampling_validate(&a->generation, &err), NX_OK);
    nx_agent_conf_free(&a);
    (void)fx;
}

static void test_endpoint_is_loopback(void **state)
{
    static const char *const yes[] = {"tcp://127.0.0.1:5555", "tcp://127.1.2.3:1",
                                      "tcp://localhost:5555", "tcp://[::1]:5555",
                                      "ipc:///tmp/nexus.sock", "inproc://router"};
    static const char *const no[] = {"tcp://0.0.0.0:5555", "tcp://*:5555",
                                     "tcp://10.0.0.1:5555", "tcp://127.0.0.1.evil.com:1",
                                     "tcp://127.0.0:5555", "tcp://1270.0.0.1:5555",
                                     "tcp://eth0:5555", "tcp://127.0.0.1;10.0.0.1:5555",
                                     "tcp://localhost.example.com:5555", "udp://127.0.0.1:1",
                                     "tcp://127.0.0.1", "", NULL};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!nx_endpoint_is_loopback(yes[i]))
            fail_msg("'%s' is loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (nx_endpoint_is_loopback(no[i]))
            fail_msg("'%s' is not loopback", no[i] ? no[i] : "NULL");
}

/* ---- typed agents: output_schema / input_schema ------------------------------------------------ */

static void test_agent_schemas(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    write_file(fx, "agents/a.yaml",
               "name: a\nmodel: m\noutput_strict: true\noutput_schema:\n  type: object\n"
               "  properties:\n    n: {type: integer, minimum: 1}\n    ok: {type: boolean}\n"
               "  required: [n]\ninput_schema: in.json\n");
    write_file(fx, "agents/in.json", "{ \"type\": \"array\", \"items\": {\"enum\": [\"x\", 2]} }");
    nx_nexus_conf_t *conf = load_ok(fx);
    const nx_agent_conf_t *a = nx_nexus_conf_agent(conf, "a");
    assert_non_null(a);
    assert_true(a->output_strict);
    assert_string_equal(a->output_schema,
                        "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\","
                        "\"minimum\":1},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"n\"]}");
    assert_string_equal(a->input_schema, "{\"type\":\"array\",\"items\":{\"enum\":[\"x\",2]}}");
    nx_nexus_conf_free(&conf);
}

static void test_agent_schema_refused_at_its_key(void **state)
{
    fixture_t *fx = *state;
    write_nexus(fx, "");
    mkdirs(at(fx, "models/m"));
    write_file(fx, "agents/a.yaml",
               "name: a\nmodel: m\noutput_schema:\n  type: object\n"
               "  patternProperties: {\"^x\": {type: string}}\n");
    const char *msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "agents/a.yaml:3:1: field 'output_schema'"); /* the key */
    assert_contains(msg, "unsupported keyword 'patternProperties'");

    write_file(fx, "agents/a.yaml", "name: a\nmodel: m\ninput_schema: missing.json\n");
    msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "agents/a.yaml:3:15: field 'input_schema'");
    assert_contains(msg, "missing.json");

    write_file(fx, "agents/a.yaml", "name: a\nmodel: m\noutput_schema: [1]\n");
    msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "a JSON Schema (a mapping)");

    write_file(fx, "agents/a.yaml", "name: a\nmodel: m\noutput_schema: {maxLength: 0x10}\n");
    msg = load_fails(fx, NX_EFORMAT);
    assert_contains(msg, "a decimal number");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shipped_config_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_and_models, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_loops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_model_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_agent_file_is_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_agents_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_regular_agent_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nesting_is_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_resolve_next_to_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_curve_required_off_loopback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_keys_and_encoding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_is_xxh3_of_the_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_schemas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_schema_refused_at_its_key, setup, teardown),
        cmocka_unit_test(test_endpoint_is_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

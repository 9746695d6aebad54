/*
 * The C ABI from C, against runtime/include/ava_runtime.h and the built libava_runtime.so
 * (scripts/test-embedding runs it on the host and under qemu-aarch64):
 *   capi_test MODEL_DIR GOLDENS_JSON BAD_ARCHIVE
 * Greedy tokens of the goldens' first prompt through the streaming callback, the streamed text
 * against ava_detokenize, cancellation from another thread (and BUSY meanwhile), chat turns and
 * reset, and the error paths. Exits non-zero on the first failure.
 */
#define _DEFAULT_SOURCE /* usleep */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ava_runtime.h"

#define MAX_IDS 256
#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "capi_test:%d: %s: ", __LINE__, #cond);             \
      fprintf(stderr, __VA_ARGS__);                                       \
      fprintf(stderr, " (last error: %s)\n", ava_last_error());           \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

/* The first `"key": [ ... ]` array of integers in `json` (the goldens' first prompt). */
static size_t json_ids(const char *json, const char *key, uint32_t *out) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  CHECK(p != NULL, "no %s in the goldens", key);
  p = strchr(p, '[') + 1;
  size_t n = 0;
  while (*p != ']' && n < MAX_IDS) {
    char *end;
    out[n++] = (uint32_t)strtoul(p, &end, 10);
    p = end + strspn(end, ", \n");
  }
  return n;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  CHECK(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)size + 1);
  CHECK(fread(buf, 1, (size_t)size, f) == (size_t)size, "short read of %s", path);
  buf[size] = 0;
  fclose(f);
  return buf;
}

struct collected {
  char text[4096];
  uint32_t ids[MAX_IDS];
  size_t n;
  atomic_int at_third; /* set by the callback at the third token */
  atomic_int released; /* set by the other thread once it has cancelled */
  int block_at_third;
};

static int on_piece(const char *piece, uint32_t token, void *user) {
  struct collected *c = user;
  strncat(c->text, piece, sizeof c->text - strlen(c->text) - 1);
  if (c->n < MAX_IDS) c->ids[c->n++] = token;
  if (c->block_at_third && c->n == 3) {
    atomic_store(&c->at_third, 1);
    while (!atomic_load(&c->released)) usleep(1000);
  }
  return 0;
}

struct canceller {
  AvaSession *session;
  struct collected *c;
  AvaStatus busy, cancel;
};

static void *cancel_thread(void *arg) {
  struct canceller *k = arg;
  while (!atomic_load(&k->c->at_third)) usleep(1000);
  AvaGenerateResult r;
  k->busy = ava_session_last_result(k->session, &r);
  k->cancel = ava_session_cancel(k->session);
  atomic_store(&k->c->released, 1);
  return NULL;
}

static void test_errors(const char *bad_archive) {
  AvaEngine *engine = (AvaEngine *)1;
  CHECK(ava_engine_open("/nonexistent/model.tar", &engine) == AVA_STATUS_IO, "bad path");
  CHECK(engine == NULL, "out is cleared on failure");
  CHECK(strstr(ava_last_error(), "/nonexistent/model.tar") != NULL, "message names the path");
  CHECK(ava_engine_open(bad_archive, &engine) == AVA_STATUS_ARCHIVE, "corrupted archive");
  CHECK(strlen(ava_last_error()) > 0, "message");
  CHECK(ava_engine_open(NULL, &engine) == AVA_STATUS_INVALID_ARGUMENT, "NULL path");
  CHECK(ava_session_cancel(NULL) == AVA_STATUS_INVALID_ARGUMENT, "NULL session");
  ava_engine_free(NULL);
  ava_session_free(NULL);
  ava_string_free(NULL);
  ava_tokens_free(NULL);
}

static void test_golden(AvaEngine *engine, const char *json) {
  uint32_t prompt[MAX_IDS], golden[MAX_IDS];
  size_t n_prompt = json_ids(json, "input_ids", prompt);
  size_t n_golden = json_ids(json, "greedy_ids", golden);
  AvaSession *session;
  CHECK(ava_session_new(engine, 256, &session) == AVA_STATUS_OK, "session");
  AvaGenerateOptions opts = ava_generate_options_default();
  opts.max_tokens = 32;
  opts.ignore_eos = true;
  struct collected c = {0};
  CHECK(ava_session_generate(session, prompt, n_prompt, &opts, on_piece, &c) == AVA_STATUS_OK,
        "generate");
  CHECK(c.n == n_golden && memcmp(c.ids, golden, n_golden * sizeof *golden) == 0,
        "greedy tokens differ from the golden");
  char *text;
  CHECK(ava_detokenize(engine, c.ids, c.n, &text) == AVA_STATUS_OK, "detokenize");
  CHECK(strcmp(text, c.text) == 0, "streamed %s, detokenized %s", c.text, text);
  ava_string_free(text);
  AvaGenerateResult r;
  CHECK(ava_session_last_result(session, &r) == AVA_STATUS_OK, "last result");
  CHECK(r.stop_reason == AVA_STOP_REASON_MAX_TOKENS && r.n_tokens == 32, "result");
  CHECK(r.timings.prefill_tokens == n_prompt && r.timings.decode_tokens == 31, "timings");
  ava_session_free(session);
  /* The exact f32 KV cache gives the same golden tokens; an unknown type is refused. */
  CHECK(ava_session_new_with_kv_cache(engine, 256, AVA_KV_CACHE_F32, &session) == AVA_STATUS_OK,
        "f32 session");
  struct collected exact = {0};
  CHECK(ava_session_generate(session, prompt, n_prompt, &opts, on_piece, &exact) ==
            AVA_STATUS_OK,
        "generate (f32 KV)");
  CHECK(exact.n == n_golden && memcmp(exact.ids, golden, n_golden * sizeof *golden) == 0,
        "f32 KV: greedy tokens differ from the golden");
  ava_session_free(session);
  CHECK(ava_session_new_with_kv_cache(engine, 256, 7, &session) == AVA_STATUS_INVALID_ARGUMENT,
        "unknown KV cache type");
}

static void test_cancel(AvaEngine *engine, const char *json) {
  uint32_t prompt[MAX_IDS];
  size_t n_prompt = json_ids(json, "input_ids", prompt);
  AvaSession *session;
  CHECK(ava_session_new(engine, 512, &session) == AVA_STATUS_OK, "session");
  AvaGenerateOptions opts = ava_generate_options_default();
  opts.max_tokens = 400;
  opts.ignore_eos = true;
  static struct collected c;
  memset(&c, 0, sizeof c);
  c.block_at_third = 1;
  struct canceller k = {session, &c, AVA_STATUS_OK, AVA_STATUS_INTERNAL};
  pthread_t thread;
  pthread_create(&thread, NULL, cancel_thread, &k);
  CHECK(ava_session_generate(session, prompt, n_prompt, &opts, on_piece, &c) == AVA_STATUS_OK,
        "generate");
  pthread_join(thread, NULL);
  CHECK(k.busy == AVA_STATUS_BUSY, "a call during generation is refused: %d", k.busy);
  CHECK(k.cancel == AVA_STATUS_OK, "cancel");
  AvaGenerateResult r;
  CHECK(ava_session_last_result(session, &r) == AVA_STATUS_OK, "last result");
  CHECK(r.stop_reason == AVA_STOP_REASON_CANCELLED && r.n_tokens == 3, "stopped at %u", r.n_tokens);
  ava_session_free(session);
}

static void test_chat(AvaEngine *engine) {
  AvaSession *session;
  CHECK(ava_session_new(engine, 512, &session) == AVA_STATUS_OK, "session");
  AvaGenerateOptions opts = ava_generate_options_default();
  opts.max_tokens = 8;
  AvaGenerateResult first, second, again;
  CHECK(ava_session_chat(session, "Hello", &opts, NULL, NULL) == AVA_STATUS_OK, "turn 1");
  CHECK(ava_session_last_result(session, &first) == AVA_STATUS_OK, "result 1");
  CHECK(ava_session_chat(session, "And then?", &opts, NULL, NULL) == AVA_STATUS_OK, "turn 2");
  CHECK(ava_session_last_result(session, &second) == AVA_STATUS_OK, "result 2");
  CHECK(second.position > first.position, "the conversation continues");
  CHECK(ava_session_reset(session) == AVA_STATUS_OK, "reset");
  CHECK(ava_session_chat(session, "Hello", &opts, NULL, NULL) == AVA_STATUS_OK, "turn 1 again");
  CHECK(ava_session_last_result(session, &again) == AVA_STATUS_OK, "result again");
  CHECK(again.position == first.position, "reset forgets the conversation");
  ava_session_free(session);
}

int main(int argc, char **argv) {
  CHECK(argc == 4, "usage: capi_test MODEL_DIR GOLDENS_JSON BAD_ARCHIVE");
  CHECK(ava_abi_version() == AVA_ABI_VERSION, "ABI version");
  char *json = read_file(argv[2]);
  test_errors(argv[3]);
  AvaEngine *engine;
  /* A policy with a malformed key is refused; a well-formed one opens (native backend). */
  const char *bad_keys[] = {"ava-ed25519-public-key 12"};
  AvaOpenOptions open_opts = ava_open_options_default();
  open_opts.trusted_keys = bad_keys;
  open_opts.n_trusted_keys = 1;
  CHECK(ava_engine_open_with(argv[1], &open_opts, &engine) == AVA_STATUS_INVALID_ARGUMENT,
        "a malformed trusted key is refused");
  open_opts.n_trusted_keys = 0;
  CHECK(ava_engine_open_with(argv[1], &open_opts, &engine) == AVA_STATUS_OK, "open_with");
  ava_engine_free(engine);
  CHECK(ava_engine_open(argv[1], &engine) == AVA_STATUS_OK, "open %s", argv[1]);
  test_golden(engine, json);
  test_cancel(engine, json);
  test_chat(engine);
  ava_engine_free(engine);
  free(json);
  printf("capi_test: ok (ava-runtime %s)\n", ava_version());
  return 0;
}

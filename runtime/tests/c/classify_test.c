/*
 * Intent classification through the C ABI, against runtime/include/ava_runtime.h and the built
 * libava_runtime.so (scripts/test-embedding runs it on the host and under qemu-aarch64):
 *   classify_test ARCHIVE EXPECTED_TSV GEMMA_ARCHIVE BAD_ARCHIVE
 * EXPECTED_TSV has one utterance a line, as `aon classify --top 3 --json` classified it:
 *   text <TAB> intent <TAB> score <TAB> out of scope (0|1) (<TAB> label <TAB> score) x 3
 * Checks every utterance against it (intents exactly, scores within TOLERANCE), the archive's
 * out-of-scope threshold (some utterances must fall below it, some not), top K edge cases,
 * labels, classifying from several threads at once, ownership after free, and the error
 * paths. Exits non-zero on the first failure.
 */
#define _POSIX_C_SOURCE 200809L /* strtok_r */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ava_runtime.h"

#define MAX_UTTERANCES 64
#define TOP_K 3
#define THREADS 4
/* aon classify prints scores rounded to the shortest decimal that reads back as the same f32;
 * host and qemu-aarch64 agree bit for bit today, the margin allows other summation orders. */
#define TOLERANCE 1e-5
#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "classify_test:%d: %s: ", __LINE__, #cond);         \
      fprintf(stderr, __VA_ARGS__);                                       \
      fprintf(stderr, " (last error: %s)\n", ava_last_error());           \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

struct expected {
  char text[512];
  char intent[128];
  double score;
  int out_of_scope;
  char top[TOP_K][128];
  double top_score[TOP_K];
};

static struct expected utterances[MAX_UTTERANCES];
static size_t n_utterances;

static void copy_field(char *dst, size_t size, const char *src) {
  CHECK(src != NULL && strlen(src) < size, "malformed expected line");
  strcpy(dst, src);
}

static void read_expected(const char *path) {
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "cannot open %s", path);
  char line[2048];
  while (fgets(line, sizeof line, f) && n_utterances < MAX_UTTERANCES) {
    line[strcspn(line, "\n")] = 0;
    struct expected *e = &utterances[n_utterances++];
    char *save = NULL;
    copy_field(e->text, sizeof e->text, strtok_r(line, "\t", &save));
    copy_field(e->intent, sizeof e->intent, strtok_r(NULL, "\t", &save));
    const char *score = strtok_r(NULL, "\t", &save);
    CHECK(score != NULL, "no score");
    e->score = strtod(score, NULL);
    const char *oos = strtok_r(NULL, "\t", &save);
    CHECK(oos != NULL, "no out-of-scope flag");
    e->out_of_scope = atoi(oos);
    for (int k = 0; k < TOP_K; k++) {
      copy_field(e->top[k], sizeof e->top[k], strtok_r(NULL, "\t", &save));
      score = strtok_r(NULL, "\t", &save);
      CHECK(score != NULL, "no top score");
      e->top_score[k] = strtod(score, NULL);
    }
  }
  fclose(f);
  CHECK(n_utterances > 0, "no utterances in %s", path);
}

static void test_errors(const char *gemma_archive, const char *bad_archive) {
  AvaClassifier *c = (AvaClassifier *)1;
  CHECK(ava_classifier_open("/nonexistent/model.tar", &c) == AVA_STATUS_IO, "bad path");
  CHECK(c == NULL, "out is cleared on failure");
  CHECK(strstr(ava_last_error(), "/nonexistent/model.tar") != NULL, "message names the path");
  CHECK(ava_classifier_open(bad_archive, &c) == AVA_STATUS_ARCHIVE, "corrupted archive");
  CHECK(strlen(ava_last_error()) > 0, "message");
  CHECK(ava_classifier_open(gemma_archive, &c) == AVA_STATUS_MODEL, "a Gemma archive");
  CHECK(strstr(ava_last_error(), "not an mALBERT") != NULL, "message says why");
  CHECK(ava_classifier_open(NULL, &c) == AVA_STATUS_INVALID_ARGUMENT, "NULL path");
  AvaClassification r;
  CHECK(ava_classify(NULL, "hi", 1, &r) == AVA_STATUS_INVALID_ARGUMENT, "NULL classifier");
  CHECK(r.intent == NULL && r.top == NULL, "out is cleared on failure");
  ava_classifier_free(NULL);
  ava_classification_free(NULL);
}

static void check_expected(const AvaClassification *r, const struct expected *e) {
  CHECK(strcmp(r->intent, e->intent) == 0, "\"%s\": %s, aon classify says %s", e->text,
        r->intent, e->intent);
  CHECK(fabs(r->score - e->score) <= TOLERANCE, "\"%s\": score %f vs %f", e->text, r->score,
        e->score);
  CHECK(r->out_of_scope == (e->out_of_scope != 0), "\"%s\": out of scope", e->text);
  CHECK(r->n_top == TOP_K, "\"%s\": %zu top intents", e->text, r->n_top);
  for (int k = 0; k < TOP_K; k++) {
    CHECK(strcmp(r->top[k].label, e->top[k]) == 0, "\"%s\": top %d is %s, not %s", e->text, k,
          r->top[k].label, e->top[k]);
    CHECK(fabs(r->top[k].score - e->top_score[k]) <= TOLERANCE, "\"%s\": top %d score", e->text,
          k);
  }
  CHECK(r->top[0].index == r->index && r->n_tokens >= 2 && r->latency_ms > 0, "fields");
}

static void test_utterances(const AvaClassifier *c, AvaClassification *results) {
  float threshold;
  CHECK(ava_classifier_threshold(c, &threshold) == AVA_STATUS_OK && threshold > 0, "threshold");
  size_t below = 0;
  for (size_t i = 0; i < n_utterances; i++) {
    CHECK(ava_classify(c, utterances[i].text, TOP_K, &results[i]) == AVA_STATUS_OK, "classify");
    check_expected(&results[i], &utterances[i]);
    CHECK(results[i].out_of_scope == (results[i].score < threshold), "the threshold decides");
    below += results[i].out_of_scope;
  }
  CHECK(below > 0 && below < n_utterances, "%zu of %zu out of scope", below, n_utterances);
}

static void test_top_k(const AvaClassifier *c) {
  size_t n_labels;
  CHECK(ava_classifier_num_labels(c, &n_labels) == AVA_STATUS_OK && n_labels > TOP_K, "labels");
  const char *label;
  CHECK(ava_classifier_label(c, n_labels, &label) == AVA_STATUS_INVALID_ARGUMENT, "range");
  AvaClassification r;
  CHECK(ava_classify(c, utterances[0].text, 0, &r) == AVA_STATUS_OK, "top 0");
  CHECK(r.n_top == 0 && r.top == NULL && strcmp(r.intent, utterances[0].intent) == 0, "top 0");
  CHECK(!r.out_of_scope, "%s is in scope", utterances[0].text);
  CHECK(ava_classifier_label(c, r.index, &label) == AVA_STATUS_OK && strcmp(label, r.intent) == 0,
        "label of the best index");
  ava_classification_free(&r);
  CHECK(ava_classify(c, utterances[0].text, 100000, &r) == AVA_STATUS_OK, "top all");
  CHECK(r.n_top == n_labels, "every intent: %zu", r.n_top);
  float sum = 0;
  for (size_t k = 0; k < r.n_top; k++) {
    sum += r.top[k].score;
    CHECK(k == 0 || r.top[k].score <= r.top[k - 1].score, "best first");
  }
  CHECK(fabsf(sum - 1.0f) < 1e-3f, "probabilities sum to %f", sum);
  ava_classification_free(&r);
  CHECK(r.intent == NULL && r.top == NULL && r.n_top == 0, "free zeroes");
  ava_classification_free(&r); /* a freed one is ignored */
  CHECK(ava_classify(c, "", 1, &r) == AVA_STATUS_OK && r.n_tokens == 2, "empty utterance");
  ava_classification_free(&r);
}

struct worker {
  const AvaClassifier *classifier;
  const AvaClassification *reference;
  int failures;
};

static void *classify_all(void *arg) {
  struct worker *w = arg;
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < n_utterances; i++) {
      AvaClassification r;
      if (ava_classify(w->classifier, utterances[i].text, TOP_K, &r) != AVA_STATUS_OK ||
          r.index != w->reference[i].index || r.score != w->reference[i].score) {
        w->failures++;
      }
      ava_classification_free(&r);
    }
  }
  return NULL;
}

static void test_threads(const AvaClassifier *c, const AvaClassification *reference) {
  pthread_t threads[THREADS];
  struct worker workers[THREADS];
  for (int t = 0; t < THREADS; t++) {
    workers[t] = (struct worker){c, reference, 0};
    CHECK(pthread_create(&threads[t], NULL, classify_all, &workers[t]) == 0, "thread");
  }
  for (int t = 0; t < THREADS; t++) {
    pthread_join(threads[t], NULL);
    CHECK(workers[t].failures == 0, "thread %d: %d results differ", t, workers[t].failures);
  }
}

int main(int argc, char **argv) {
  CHECK(argc == 5, "usage: classify_test ARCHIVE EXPECTED_TSV GEMMA_ARCHIVE BAD_ARCHIVE");
  read_expected(argv[2]);
  test_errors(argv[3], argv[4]);
  AvaClassifier *c;
  CHECK(ava_classifier_open(argv[1], &c) == AVA_STATUS_OK, "open %s", argv[1]);
  static AvaClassification results[MAX_UTTERANCES];
  test_utterances(c, results);
  test_top_k(c);
  test_threads(c, results);
  ava_classifier_free(c);
  /* Results belong to the caller: still readable after the classifier is gone. */
  for (size_t i = 0; i < n_utterances; i++) {
    CHECK(strcmp(results[i].intent, utterances[i].intent) == 0, "after free");
    ava_classification_free(&results[i]);
  }
  printf("classify_test: ok (%zu utterances match aon classify)\n", n_utterances);
  return 0;
}

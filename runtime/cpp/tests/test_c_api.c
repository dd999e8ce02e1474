/* The C API from C (the header must compile as C): load errors, predictions as JSON, embeddings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtst/mtst.h"

static int failures = 0;
#define EXPECT(cond)                                                     \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                  \
        }                                                                \
    } while (0)

int main(void) {
    const char* fixtures = getenv("MTST_FIXTURES");
    if (!fixtures) {
        fprintf(stderr, "MTST_FIXTURES is not set\n");
        return 1;
    }
    char path[4096];
    char* err = NULL;

    /* a folder that is not a bundle: NULL, and a message naming it */
    EXPECT(mtst_engine_load("/nonexistent", NULL, &err) == NULL);
    EXPECT(err && strcmp(err, "BundleError: /nonexistent: not a directory (a bundle is a folder holding manifest.json)") == 0);
    mtst_free(err);
    err = NULL;

    snprintf(path, sizeof path, "%s/toy-split", fixtures);
    EXPECT(mtst_engine_load(path, "{\"providers\": [\"cpu\"], \"bogus\": 1}", &err) == NULL);
    EXPECT(err && strncmp(err, "ConfigError: options: unknown option 'bogus'", 44) == 0);
    mtst_free(err);
    err = NULL;

    mtst_engine* e = mtst_engine_load(path, "{\"providers\": [\"cpu\"], \"intra_op_threads\": 1}", &err);
    EXPECT(e != NULL && err == NULL);
    if (!e) {
        fprintf(stderr, "%s\n", err ? err : "?");
        return 1;
    }
    EXPECT(mtst_embedding_dim(e) == 8);

    const char* texts[] = {"Apple opened an office in Paris.", "Great movie!"};
    char* json = NULL;
    EXPECT(mtst_predict_json(e, texts, NULL, 2, "{\"heads\": [\"ner\"], \"min_entity_score\": 0.1}", &json, &err) == MTST_OK);
    EXPECT(json && json[0] == '[' && strstr(json, "{\"text\": \"Apple opened an office in Paris.\", \"truncated\": false, "
                                                  "\"heads\": {\"ner\": {\"entities\": [") != NULL);
    EXPECT(json && strstr(json, "\"intent\"") == NULL);
    mtst_free(json);
    json = NULL;

    /* texts with explicit lengths may hold NUL bytes; invalid UTF-8 is refused by index */
    const char* bad[] = {"ok", "x\xff"};
    const size_t lengths[] = {2, 2};
    EXPECT(mtst_predict_json(e, bad, lengths, 2, NULL, &json, &err) == MTST_ERROR_INPUT);
    EXPECT(err && strcmp(err, "ValueError: texts[1]: not valid UTF-8 (invalid start byte at byte 1)") == 0);
    mtst_free(err);
    err = NULL;
    EXPECT(mtst_predict_json(e, texts, NULL, 1, "{\"heads\": \"intent\"}", &json, &err) == MTST_ERROR_CONFIG);
    mtst_free(err);
    err = NULL;

    /* thresholds override the manifest's per head (the toy's intent scores are far under 0.999), abstain=false drops them */
    EXPECT(mtst_predict_json(e, texts, NULL, 1, "{\"heads\": [\"intent\"], \"thresholds\": {\"intent\": 0.999}}", &json,
                             &err) == MTST_OK);
    EXPECT(json && strstr(json, "\"abstained\": true, \"scores\": {") != NULL);
    mtst_free(json);
    json = NULL;
    EXPECT(mtst_predict_json(e, texts, NULL, 1, "{\"thresholds\": {\"intent\": 1.0}, \"abstain\": false}", &json, &err) ==
           MTST_OK);
    EXPECT(json && strstr(json, "\"abstained\": false, \"scores\": {") != NULL);
    mtst_free(json);
    json = NULL;
    EXPECT(mtst_predict_json(e, texts, NULL, 1, "{\"thresholds\": {\"sentiment\": 0.5}}", &json, &err) == MTST_ERROR_CONFIG);
    EXPECT(err && strcmp(err, "ConfigError: thresholds: unknown head(s) ['sentiment']; the heads are ['intent', 'ner']") == 0);
    mtst_free(err);
    err = NULL;
    EXPECT(mtst_predict_json(e, texts, NULL, 1, "{\"thresholds\": {\"ner\": 2}}", &json, &err) == MTST_ERROR_INPUT);
    EXPECT(err && strcmp(err, "ValueError: thresholds['ner']: expected a number in [0, 1], got 2.0") == 0);
    mtst_free(err);
    err = NULL;

    float emb[16];
    EXPECT(mtst_embed(e, texts, NULL, 2, emb, 16, &err) == MTST_OK);
    double norm = 0;
    for (int i = 0; i < 8; ++i) norm += emb[i] * emb[i];
    EXPECT(fabs(norm - 1.0) < 1e-5); /* L2-normalized */
    EXPECT(mtst_embed(e, texts, NULL, 2, emb, 8, &err) == MTST_ERROR_INPUT);
    mtst_free(err);
    err = NULL;

    EXPECT(mtst_engine_info_json(e, &json, &err) == MTST_OK);
    EXPECT(json && strstr(json, "\"variant\":\"fp32/split\"") != NULL);
    mtst_free(json);
    EXPECT(strlen(mtst_version()) > 0);
    mtst_engine_free(e);

    printf("%d failed checks\n", failures);
    return failures ? 1 : 0;
}

/* mtst C API: run an mtst bundle (every head of a multi-task model) from any language with a C FFI
 * (Rust, Go, Swift, Java/JNA, C#, Python ctypes).
 *
 *   char* err = NULL;
 *   mtst_engine* e = mtst_engine_load("bundle/", "{\"providers\": [\"cpu\"], \"intra_op_threads\": 1}", &err);
 *   if (!e) { fprintf(stderr, "%s\n", err); mtst_free(err); return 1; }
 *   const char* texts[] = {"Apple opened an office in Paris."};
 *   char* json = NULL;
 *   if (mtst_predict_json(e, texts, NULL, 1, NULL, &json, &err) == MTST_OK) { puts(json); mtst_free(json); }
 *   mtst_engine_free(e);
 *
 * Conventions: texts are UTF-8 (`lengths` may be NULL for NUL-terminated texts); options are JSON objects
 * (NULL or "" for the defaults); every function returns an mtst_status, and on failure sets *error (when
 * `error` is not NULL) to a message that names the file, field or value -- "BundleError: <message>" --
 * which the caller frees with mtst_free. Strings returned by the library are freed with mtst_free.
 * One engine may be used from many threads at once.
 */
#ifndef MTST_H
#define MTST_H

#include <stddef.h>

#if defined(_WIN32)
#define MTST_C_API __declspec(dllexport)
#else
#define MTST_C_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mtst_engine mtst_engine;

typedef enum mtst_status {
    MTST_OK = 0,
    MTST_ERROR_BUNDLE = 1,   /* missing file, failed verification, bundle does not fit the request */
    MTST_ERROR_CONFIG = 2,   /* an option is invalid */
    MTST_ERROR_PROVIDER = 3, /* a required execution provider cannot be used */
    MTST_ERROR_INPUT = 4,    /* a text is not valid UTF-8, a NULL argument, ... */
    MTST_ERROR_RUNTIME = 5,  /* ONNX Runtime failed while running a graph */
    MTST_ERROR_INTERNAL = 6  /* anything else (out of memory, ...) */
} mtst_status;

/* Load and verify a bundle. options: JSON object with any of
 *   providers (["auto"] | ["cpu"] | ["cuda", "cpu"] ...), allow_fallback (bool), precision
 *   ("fp32" | "fp16" | "int8-dynamic" | "int8-static" | "int8-static-cpu"), layout ("single" | "split"), intra_op_threads,
 *   inter_op_threads, spinning (bool), graph_optimization ("disable" | "basic" | "extended" | "all"),
 *   batch_size, max_batch_tokens (-1 auto, 0 none), parallel_batches, verify (bool).
 * Returns NULL on failure (see *error). */
MTST_C_API mtst_engine* mtst_engine_load(const char* bundle_dir, const char* options_json, char** error);
MTST_C_API void mtst_engine_free(mtst_engine* engine);

/* Predict every head (or those named) for n texts. *out_json receives a JSON array with one object per
 * text, in input order, each as `mtst-predict --format json` prints it: text, truncated, heads
 * (label/score/abstained/scores or entities with code-point offsets) [, embedding] [, logits].
 * options: JSON object with any of heads (list of names), embedding (bool), logits (bool),
 * min_entity_score (number in [0, 1]), thresholds (object: head name -> number in [0, 1], overriding the
 * manifest's), abstain (bool, default true; false: no thresholds). Scores are calibrated with each head's
 * temperature; a sentence head scored under its threshold says "abstained": true, a token head drops
 * entities scored under it (see PredictOptions in mtst/engine.hpp). */
MTST_C_API mtst_status mtst_predict_json(const mtst_engine* engine, const char* const* texts, const size_t* lengths,
                                         size_t n, const char* options_json, char** out_json, char** error);

/* L2-normalized embeddings of n texts into out (n * mtst_embedding_dim floats, row-major). */
MTST_C_API mtst_status mtst_embed(const mtst_engine* engine, const char* const* texts, const size_t* lengths, size_t n,
                                  float* out, size_t out_len, char** error);

/* Facts about a loaded engine: JSON object {"bundle", "variant", "providers", "heads", "embedding_dim",
 * "max_seq_len", "version", "onnxruntime"}. */
MTST_C_API mtst_status mtst_engine_info_json(const mtst_engine* engine, char** out_json, char** error);
MTST_C_API size_t mtst_embedding_dim(const mtst_engine* engine);

MTST_C_API const char* mtst_version(void);
MTST_C_API void mtst_free(void* p);

#ifdef __cplusplus
}
#endif

#endif /* MTST_H */

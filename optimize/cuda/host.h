/* Shared between the host sources of optimize/cuda (C only; not installed). */
#ifndef TP_CUDA_HOST_H
#define TP_CUDA_HOST_H

#include "cuda_internal.h"
#include "tp_cuda.h"

/* Check that a device is usable and load the kernels' constant tables,
 * once per process. TP_EUNSUPPORTED without a GPU. */
int tp_cuda_init(void);
/* tp_error_set for a failed CUDA call e (a cudaError_t) doing what;
 * returns TP_EIO (TP_ENOMEM for an allocation failure). */
int tp_cuda_fail(int e, const char *what);
/* The kernels' view of a layer made by tp_cuda_linear_new and its device
 * bias (NULL when none); NULL for other layers. */
const tp_cuda_wfmt *tp_cuda_linear_wfmt(const tp_linear *l, const float **bias);
/* tp_cuda_linear_new reading a non-packed src through forward on pool. */
int tp_cuda_linear_new_pool(tp_linear **out, const tp_linear *src, tp_pool *pool);
double tp_cuda_now_s(void);
/* Block b of m on the GPU for calibration (tp_calib_device.block_*). */
typedef struct tp_cuda_block tp_cuda_block;
int tp_cuda_block_new(tp_cuda_block **out, tp_model *m, size_t b, size_t max_n);
int tp_cuda_block_run(tp_cuda_block *b, float *x, size_t n);
void tp_cuda_block_free(tp_cuda_block *b);
/* tp_cuda_calib_device()'s table, for the backend's static one. */
extern const tp_calib_device tp_cuda_calib_dev;

#endif

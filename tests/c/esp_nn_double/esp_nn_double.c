/* The ESP-NN test double (see esp_nn.h): TFLite's int8 arithmetic in plain loops, plus scratch use that
 * fills every byte it asked for, so a glue that hands over too small a buffer corrupts memory a test sees. */
#include <stdlib.h>
#include <string.h>

#include "esp_nn.h"

long esp_nn_double_calls = 0;
static int8_t *conv_scratch, *dw_scratch;

static int32_t srdhm(int32_t a, int32_t b)
{
    int64_t ab, nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * b;
    nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static int32_t rdbpot(int32_t x, int e)
{
    const int32_t mask = (int32_t)(((int64_t)1 << e) - 1), rem = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > threshold ? 1 : 0);
}

static int8_t requant(int32_t acc, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t v = rdbpot(srdhm((int32_t)((uint32_t)acc << left), mult), right) + zp;
    v = v < lo ? lo : v;
    return (int8_t)(v > hi ? hi : v);
}

static int scratch_need(const data_dims_t *in, const data_dims_t *f)
{
    return in->width * in->height * in->channels / 2 + f->width * f->height + 32;
}

int esp_nn_get_conv_scratch_size(const data_dims_t *input_dims, const data_dims_t *filter_dims,
                                 const data_dims_t *output_dims, const conv_params_t *conv_params)
{
    (void)output_dims;
    (void)conv_params;
    return scratch_need(input_dims, filter_dims);
}

void esp_nn_set_conv_scratch_buf(const void *buf)
{
    conv_scratch = (int8_t *)buf;
}

int esp_nn_get_depthwise_conv_scratch_size(const data_dims_t *input_dims, const data_dims_t *filter_dims,
                                           const data_dims_t *output_dims, const dw_conv_params_t *conv_params)
{
    (void)output_dims;
    (void)conv_params;
    return scratch_need(input_dims, filter_dims);
}

void esp_nn_set_depthwise_conv_scratch_buf(const void *buf)
{
    dw_scratch = (int8_t *)buf;
}

/* Both convolutions, TFLite's loops. ch_mult 0: a full convolution, filter OHWI, every output channel
 * reads every input channel. ch_mult m > 0: depthwise, filter [1, KH, KW, C * m], output channel oc
 * reads input channel oc / m. The scratch the glue set is checked and every byte of it written. */
static void conv_s8(const data_dims_t *in, const int8_t *x, const data_dims_t *f, const int8_t *w,
                    const int32_t *bias, const data_dims_t *out, int8_t *y, int8_t *scratch, int ch_mult,
                    const data_2d_t *stride, const data_2d_t *padding, int32_t in_offset, int32_t out_offset,
                    const act_params_t *act, const quant_data_t *q)
{
    /* output channels, and the filter step from one tap (ky, kx) to the next */
    const int n_oc = ch_mult ? in->channels * ch_mult : out->channels;
    const int tap_step = ch_mult ? in->channels * ch_mult : in->channels;
    int oy, ox, oc, ky, kx, ic;
    if (scratch == NULL) {
        abort();
    }
    memset(scratch, 0x5a, (size_t)scratch_need(in, f));
    ++esp_nn_double_calls;
    for (oy = 0; oy < out->height; ++oy) {
        for (ox = 0; ox < out->width; ++ox) {
            for (oc = 0; oc < n_oc; ++oc) {
                const int c0 = ch_mult ? oc / ch_mult : 0, nc = ch_mult ? 1 : in->channels;
                const int8_t *wo = ch_mult ? w + oc : w + oc * f->height * f->width * in->channels;
                int32_t acc = bias ? bias[oc] : 0;
                for (ky = 0; ky < f->height; ++ky) {
                    const int iy = oy * stride->height - padding->height + ky;
                    for (kx = 0; kx < f->width; ++kx) {
                        const int ix = ox * stride->width - padding->width + kx;
                        if (iy < 0 || iy >= in->height || ix < 0 || ix >= in->width) {
                            continue;
                        }
                        for (ic = 0; ic < nc; ++ic) {
                            acc += (x[(iy * in->width + ix) * in->channels + c0 + ic] + in_offset) *
                                   wo[(ky * f->width + kx) * tap_step + ic];
                        }
                    }
                }
                y[(oy * out->width + ox) * out->channels + oc] =
                    requant(acc, q->mult[oc], q->shift[oc], out_offset, act->min, act->max);
            }
        }
    }
}

void esp_nn_conv_s8(const data_dims_t *in, const int8_t *x, const data_dims_t *f, const int8_t *w,
                    const int32_t *bias, const data_dims_t *out, int8_t *y, const conv_params_t *p,
                    const quant_data_t *q)
{
    conv_s8(in, x, f, w, bias, out, y, conv_scratch, 0, &p->stride, &p->padding, p->in_offset, p->out_offset,
            &p->activation, q);
}

void esp_nn_depthwise_conv_s8(const data_dims_t *in, const int8_t *x, const data_dims_t *f, const int8_t *w,
                              const int32_t *bias, const data_dims_t *out, int8_t *y,
                              const dw_conv_params_t *p, const quant_data_t *q)
{
    if (p->ch_mult < 1) {
        abort(); /* 0 would mean a full convolution to conv_s8 */
    }
    conv_s8(in, x, f, w, bias, out, y, dw_scratch, p->ch_mult, &p->stride, &p->padding, p->in_offset,
            p->out_offset, &p->activation, q);
}

void esp_nn_fully_connected_per_ch_s8(const int8_t *x, const int32_t input_offset, const uint16_t row_len,
                                      const int8_t *w, const int32_t filter_offset, const int32_t *bias,
                                      int8_t *y, const uint16_t out_channels, const int32_t out_offset,
                                      const int32_t *out_shift, const int32_t *out_mult,
                                      const int32_t activation_min, const int32_t activation_max)
{
    int o, i;
    ++esp_nn_double_calls;
    for (o = 0; o < out_channels; ++o) {
        int32_t acc = bias ? bias[o] : 0;
        for (i = 0; i < row_len; ++i) {
            acc += (w[o * row_len + i] + filter_offset) * (x[i] + input_offset);
        }
        y[o] = requant(acc, out_mult[o], out_shift[o], out_offset, activation_min, activation_max);
    }
}

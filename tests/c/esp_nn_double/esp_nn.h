/* A test double of ESP-NN's C API (espressif/esp-nn, Apache-2.0), written for edgebn's tests from the
 * API's documented semantics (TFLite int8 numerics); it contains no ESP-NN code. The generated
 * model's ESP-NN glue (-D<PREFIX>_USE_ESP_NN=1) compiles and links against it in CI, where ESP-NN
 * itself is not available; docs/ESP_NN.md says how the glue was checked against ESP-NN itself.
 * Only the calls the glue makes are here. */
#ifndef EDGEBN_TEST_ESP_NN_DOUBLE_H
#define EDGEBN_TEST_ESP_NN_DOUBLE_H

#include <stdint.h>

typedef struct data_dims {
    int32_t width;
    int32_t height;
    int32_t channels;
    int32_t extra;
} data_dims_t;

typedef struct data_2d {
    int32_t width;
    int32_t height;
} data_2d_t;

typedef struct act_params {
    int32_t min;
    int32_t max;
} act_params_t;

typedef struct quant_data {
    int32_t *shift;
    int32_t *mult;
} quant_data_t;

typedef struct conv_params {
    int32_t in_offset;
    int32_t out_offset;
    data_2d_t stride;
    data_2d_t padding;
    data_2d_t dilation;
    act_params_t activation;
} conv_params_t;

typedef struct dw_conv_params {
    int32_t in_offset;
    int32_t out_offset;
    int32_t ch_mult;
    data_2d_t stride;
    data_2d_t padding;
    data_2d_t dilation;
    act_params_t activation;
} dw_conv_params_t;

int esp_nn_get_conv_scratch_size(const data_dims_t *input_dims, const data_dims_t *filter_dims,
                                 const data_dims_t *output_dims, const conv_params_t *conv_params);
void esp_nn_set_conv_scratch_buf(const void *buf);
void esp_nn_conv_s8(const data_dims_t *input_dims, const int8_t *input_data, const data_dims_t *filter_dims,
                    const int8_t *filter_data, const int32_t *bias, const data_dims_t *output_dims,
                    int8_t *out_data, const conv_params_t *conv_params, const quant_data_t *quant_data);

int esp_nn_get_depthwise_conv_scratch_size(const data_dims_t *input_dims, const data_dims_t *filter_dims,
                                           const data_dims_t *output_dims, const dw_conv_params_t *conv_params);
void esp_nn_set_depthwise_conv_scratch_buf(const void *buf);
void esp_nn_depthwise_conv_s8(const data_dims_t *input_dims, const int8_t *input_data,
                              const data_dims_t *filter_dims, const int8_t *filter_data, const int32_t *bias,
                              const data_dims_t *output_dims, int8_t *out_data,
                              const dw_conv_params_t *conv_params, const quant_data_t *quant_data);

void esp_nn_fully_connected_per_ch_s8(const int8_t *input_data, const int32_t input_offset,
                                      const uint16_t row_len, const int8_t *filter_data,
                                      const int32_t filter_offset, const int32_t *bias, int8_t *out_data,
                                      const uint16_t out_channels, const int32_t out_offset,
                                      const int32_t *out_shift, const int32_t *out_mult,
                                      const int32_t activation_min, const int32_t activation_max);

/* the double's own counter: the kernel calls made */
extern long esp_nn_double_calls;

#endif

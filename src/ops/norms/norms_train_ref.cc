#include <cmath>
#include <vector>

#include "core/error.h"
#include "ops/norms/norms_train.h"

namespace dsa {
namespace {

template <typename Real>
void validate_shape(const char* op, int64_t tokens, int64_t dim, Real eps) {
  if (tokens < 0) fail("{}: tokens must be >= 0, got {}", op, tokens);
  if (dim <= 0) fail("{}: dim must be > 0, got {}", op, dim);
  if (!(eps > Real(0)) || !std::isfinite(eps))
    fail("{}: eps must be finite and > 0, got {}", op, eps);
}

void require(const void* pointer, const char* op, const char* field) {
  if (pointer == nullptr) fail("{}: {} must be set", op, field);
}

}  // namespace

template <typename Real>
void validate(const RmsNormTrain<Real>& params) {
  validate_shape("rms_norm_train", params.tokens, params.dim, params.eps);
}

template <typename Real>
void validate(const LayerNormTrain<Real>& params) {
  validate_shape("layer_norm_train", params.tokens, params.dim, params.eps);
}

template <typename Real>
void validate_forward(const RmsNormTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  const char* op = "rms_norm_train_forward";
  require(p.x, op, "x");
  require(p.weight, op, "weight");
  require(p.y, op, "y");
  require(p.rstd, op, "rstd");
}

template <typename Real>
void validate_backward(const RmsNormTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  const char* op = "rms_norm_backward";
  require(p.x, op, "x");
  require(p.weight, op, "weight");
  require(p.rstd, op, "rstd");
  require(p.dy, op, "dy");
  require(p.dx, op, "dx");
}

template <typename Real>
void validate_forward(const LayerNormTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  const char* op = "layer_norm_train_forward";
  require(p.x, op, "x");
  require(p.weight, op, "weight");
  require(p.bias, op, "bias");
  require(p.y, op, "y");
  require(p.mean, op, "mean");
  require(p.rstd, op, "rstd");
}

template <typename Real>
void validate_backward(const LayerNormTrain<Real>& p) {
  validate(p);
  if (p.tokens == 0) return;
  const char* op = "layer_norm_backward";
  require(p.x, op, "x");
  require(p.weight, op, "weight");
  require(p.mean, op, "mean");
  require(p.rstd, op, "rstd");
  require(p.dy, op, "dy");
  require(p.dx, op, "dx");
}

template <typename Real>
void rms_norm_train_forward_reference(const RmsNormTrain<Real>& p) {
  validate_forward(p);
  const int64_t dim = p.dim;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* x = p.x + t * dim;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_squares += double(x[i]) * double(x[i]);
    const Real rstd = Real(1.0 / std::sqrt(sum_squares / double(dim) + double(p.eps)));
    p.rstd[t] = rstd;
    Real* y = p.y + t * dim;
    for (int64_t i = 0; i < dim; ++i) y[i] = p.weight[i] * (x[i] * rstd);
  }
}

template <typename Real>
void rms_norm_backward_reference(const RmsNormTrain<Real>& p) {
  validate_backward(p);
  const int64_t dim = p.dim;
  std::vector<double> dweight(p.dweight ? size_t(dim) : 0, 0.0);
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* x = p.x + t * dim;
    const Real* dy = p.dy + t * dim;
    const Real rstd = p.rstd[t];
    double dot = 0.0;  // Σ g ⊙ x̂
    for (int64_t i = 0; i < dim; ++i) {
      const Real xhat = x[i] * rstd;
      dot += double(p.weight[i] * dy[i]) * double(xhat);
      if (p.dweight) dweight[i] += double(dy[i]) * double(xhat);
    }
    const Real mean_dot = Real(dot / double(dim));
    Real* dx = p.dx + t * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const Real g = p.weight[i] * dy[i];  // read before dx[i] is written (dx may be dy)
      dx[i] = rstd * (g - (x[i] * rstd) * mean_dot);
    }
  }
  if (p.dweight) {
    for (int64_t i = 0; i < dim; ++i) p.dweight[i] += Real(dweight[i]);
  }
}

template <typename Real>
void layer_norm_train_forward_reference(const LayerNormTrain<Real>& p) {
  validate_forward(p);
  const int64_t dim = p.dim;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* x = p.x + t * dim;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += double(x[i]);
    const Real mean = Real(sum / double(dim));
    double sum_squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double centered = double(x[i]) - double(mean);
      sum_squares += centered * centered;
    }
    const Real rstd = Real(1.0 / std::sqrt(sum_squares / double(dim) + double(p.eps)));
    p.mean[t] = mean;
    p.rstd[t] = rstd;
    Real* y = p.y + t * dim;
    for (int64_t i = 0; i < dim; ++i) y[i] = p.weight[i] * ((x[i] - mean) * rstd) + p.bias[i];
  }
}

template <typename Real>
void layer_norm_backward_reference(const LayerNormTrain<Real>& p) {
  validate_backward(p);
  const int64_t dim = p.dim;
  std::vector<double> dweight(p.dweight ? size_t(dim) : 0, 0.0);
  std::vector<double> dbias(p.dbias ? size_t(dim) : 0, 0.0);
  for (int64_t t = 0; t < p.tokens; ++t) {
    const Real* x = p.x + t * dim;
    const Real* dy = p.dy + t * dim;
    const Real mean = p.mean[t];
    const Real rstd = p.rstd[t];
    double sum_g = 0.0;      // Σ g
    double sum_gxhat = 0.0;  // Σ g ⊙ x̂
    for (int64_t i = 0; i < dim; ++i) {
      const Real xhat = (x[i] - mean) * rstd;
      const Real g = p.weight[i] * dy[i];
      sum_g += double(g);
      sum_gxhat += double(g) * double(xhat);
      if (p.dweight) dweight[i] += double(dy[i]) * double(xhat);
      if (p.dbias) dbias[i] += double(dy[i]);
    }
    const Real mean_g = Real(sum_g / double(dim));
    const Real mean_gxhat = Real(sum_gxhat / double(dim));
    Real* dx = p.dx + t * dim;
    for (int64_t i = 0; i < dim; ++i) {
      const Real xhat = (x[i] - mean) * rstd;
      const Real g = p.weight[i] * dy[i];  // read before dx[i] is written (dx may be dy)
      dx[i] = rstd * (g - mean_g - xhat * mean_gxhat);
    }
  }
  for (int64_t i = 0; i < (p.dweight ? dim : 0); ++i) p.dweight[i] += Real(dweight[i]);
  for (int64_t i = 0; i < (p.dbias ? dim : 0); ++i) p.dbias[i] += Real(dbias[i]);
}

template void validate(const RmsNormTrain<float>&);
template void validate(const LayerNormTrain<float>&);
template void validate_forward(const RmsNormTrain<float>&);
template void validate_backward(const RmsNormTrain<float>&);
template void validate_forward(const LayerNormTrain<float>&);
template void validate_backward(const LayerNormTrain<float>&);
template void rms_norm_train_forward_reference(const RmsNormTrain<float>&);
template void rms_norm_backward_reference(const RmsNormTrain<float>&);
template void layer_norm_train_forward_reference(const LayerNormTrain<float>&);
template void layer_norm_backward_reference(const LayerNormTrain<float>&);

template void validate(const RmsNormTrain<double>&);
template void validate(const LayerNormTrain<double>&);
template void validate_forward(const RmsNormTrain<double>&);
template void validate_backward(const RmsNormTrain<double>&);
template void validate_forward(const LayerNormTrain<double>&);
template void validate_backward(const LayerNormTrain<double>&);
template void rms_norm_train_forward_reference(const RmsNormTrain<double>&);
template void rms_norm_backward_reference(const RmsNormTrain<double>&);
template void layer_norm_train_forward_reference(const LayerNormTrain<double>&);
template void layer_norm_backward_reference(const LayerNormTrain<double>&);

}  // namespace dsa

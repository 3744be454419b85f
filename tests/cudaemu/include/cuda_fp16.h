// cudaemu's stand-in for cuda_fp16.h: IEEE binary16 storage and exact conversions to float.
#pragma once
#include "../cudaemu.h"

struct __half_raw { unsigned short x; };
struct __half2_raw { unsigned short x, y; };
struct __half {
  unsigned short __x;
  __half() = default;
  __half(__half_raw r) : __x(r.x) {}
  operator __half_raw() const { return __half_raw{__x}; }
};
struct alignas(4) __half2 {
  __half x, y;
  __half2() = default;
  __half2(__half a, __half b) : x(a), y(b) {}
  __half2(__half2_raw r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
};

namespace cudaemu {
// binary16 -> binary32, written out case by case (deliberately not the bit trick the CPU core uses).
inline float half_bits_to_float(unsigned short h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    const float mag = std::ldexp(float(man), -24);  // zero or subnormal: exact
    bits = uint32_t(to_bits(mag)) | sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);  // Inf, or NaN keeping its payload
  } else {
    bits = sign | (uint32_t(exp - 15 + 127) << 23) | (man << 13);
  }
  return from_bits<float>(bits);
}
inline unsigned short float_to_half_bits(float f) {  // round to nearest even
  const uint32_t b = uint32_t(to_bits(f));
  const uint32_t sign = (b >> 16) & 0x8000u;
  const float a = std::fabs(f);
  if (a != a) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;
  if (a < 6.103515625e-05f) return sign | (unsigned short)std::nearbyint(a * 16777216.0f);  // subnormal
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  unsigned int mant = (unsigned int)std::nearbyint(std::ldexp(m, 11));  // 11 significant bits
  if (mant == 2048) mant = 1024, ++e;
  return sign | (unsigned short)(((e - 1 + 15) << 10) | (mant - 1024));
}
}  // namespace cudaemu

inline float __half2float(__half h) { return ::cudaemu::half_bits_to_float(h.__x); }
inline __half __float2half(float f) { return __half(__half_raw{::cudaemu::float_to_half_bits(f)}); }
inline __half __ushort_as_half(unsigned short x) { return __half(__half_raw{x}); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }

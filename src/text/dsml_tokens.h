// The special strings of DeepSeek-V3.2's chat format (encoding_dsv32.py). The full-width bar `｜`
// is U+FF5C and `▁` is U+2581; see docs/chat-format.md.
#pragma once

#include <string_view>

namespace dsa::text::tokens {

inline constexpr std::string_view kBos = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEos = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kUser = "<｜User｜>";
inline constexpr std::string_view kAssistant = "<｜Assistant｜>";
inline constexpr std::string_view kThinkStart = "<think>";
inline constexpr std::string_view kThinkEnd = "</think>";

// DSML tool-call markup. The model writes a block of this shape after its content:
//   \n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="N">\n
//   <｜DSML｜parameter name="K" string="true|false">V</｜DSML｜parameter>\n...
//   </｜DSML｜invoke>\n...</｜DSML｜function_calls>
inline constexpr std::string_view kDsml = "｜DSML｜";
inline constexpr std::string_view kFunctionCallsOpen = "<｜DSML｜function_calls";
inline constexpr std::string_view kFunctionCallsClose = "</｜DSML｜function_calls>";
inline constexpr std::string_view kInvokeOpen = "<｜DSML｜invoke";
inline constexpr std::string_view kInvokeClose = "</｜DSML｜invoke>";
inline constexpr std::string_view kParameterOpen = "<｜DSML｜parameter";
inline constexpr std::string_view kParameterClose = "</｜DSML｜parameter>";

}  // namespace dsa::text::tokens

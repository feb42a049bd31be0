#pragma once
// state_dict interop with Python, both ways.
//   Python -> C++: torch.save(dict(model.state_dict()), path), then load_state_dict(model, path).
//   C++ -> Python: save_state_dict(model, path), then torch.load(path) returns a dict of tensors.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace libprune::io {

using StateDict = std::map<std::string, torch::Tensor>;

// Every parameter and buffer of the module, keyed like Python's state_dict().
StateDict state_dict(const torch::nn::Module& module);

// Reads a file written by torch.save(dict(...)) or save_state_dict(). A missing, truncated or
// corrupt file, or one that holds something other than a dict of tensors, throws an error that
// names the file and the fix.
StateDict read_state_dict(const std::string& path);

// Writes a dict of tensors readable by torch.load(), atomically (temp file, then rename), so an
// earlier file at `path` survives a failed write.
void write_state_dict(const StateDict& state, const std::string& path);
// The bytes write_state_dict writes (a file's size without writing it).
std::vector<char> serialize_state_dict(const StateDict& state);

// Copies `state` into the module. Missing keys, unexpected keys and shape mismatches are all
// collected into one error, and the module is left untouched when there is any.
void load_state_dict(torch::nn::Module& module, const StateDict& state, const std::string& source = "state_dict");
void load_state_dict(torch::nn::Module& module, const std::string& path);
void save_state_dict(const torch::nn::Module& module, const std::string& path);

}  // namespace libprune::io

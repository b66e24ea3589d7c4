// Packing of message payloads into one contiguous byte buffer and bounds-checked unpacking.
// A malformed or truncated buffer throws MessageError instead of reading past its end, so that a
// corrupted client payload can be rejected with a reason. Little-endian hosts only (x86, ARM).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "h2tune/core/error.h"

namespace h2tune {

class ByteWriter {
public:
    template <class T>
    void put(const T& value) {
        static_assert(std::is_trivially_copyable<T>::value, "plain values only");
        append(&value, sizeof(T));
    }
    template <class T>
    void put_array(const T* data, size_t count) {
        put<uint64_t>(count);
        append(data, count * sizeof(T));
    }
    void put_string(const std::string& s) { put_array(s.data(), s.size()); }
    void append(const void* data, size_t bytes) {
        const auto* p = static_cast<const uint8_t*>(data);
        buffer_.insert(buffer_.end(), p, p + bytes);
    }
    std::vector<uint8_t>& buffer() { return buffer_; }
    size_t size() const { return buffer_.size(); }

private:
    std::vector<uint8_t> buffer_;
};

class ByteReader {
public:
    ByteReader(const uint8_t* data, size_t size, std::string what) : data_(data), size_(size), what_(std::move(what)) {}
    template <class T>
    T get() {
        T value;
        copy(&value, sizeof(T));
        return value;
    }
    // Reads a length-prefixed array of any length.
    template <class T>
    std::vector<T> get_array() {
        return get_elements<T>(get<uint64_t>());
    }
    // Reads a length-prefixed array that must hold exactly `expected` elements, 0 included (a
    // tensor with an empty dimension still has to arrive empty).
    template <class T>
    std::vector<T> get_array(size_t expected) {
        const uint64_t n = get<uint64_t>();
        if (n != expected)
            throw MessageError(what_ + ": array of " + std::to_string(n) + " elements, expected " + std::to_string(expected));
        return get_elements<T>(n);
    }
    std::string get_string() {
        const std::vector<char> v = get_array<char>();
        return std::string(v.begin(), v.end());
    }
    size_t position() const { return pos_; }
    bool done() const { return pos_ == size_; }

private:
    template <class T>
    std::vector<T> get_elements(uint64_t n) {
        // Checked before allocating: a corrupt count must not become a huge allocation.
        if (n > (size_ - pos_) / sizeof(T)) throw MessageError(what_ + ": array length past the end of the message");
        std::vector<T> out(static_cast<size_t>(n));
        copy(out.data(), out.size() * sizeof(T));
        return out;
    }
    void copy(void* out, size_t bytes) {
        if (bytes > size_ - pos_) throw MessageError(what_ + ": message truncated");
        if (bytes) std::memcpy(out, data_ + pos_, bytes);
        pos_ += bytes;
    }
    const uint8_t* data_;
    size_t size_;
    size_t pos_ = 0;
    std::string what_;
};

}  // namespace h2tune

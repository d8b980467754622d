// libFuzzer target: the .npy parser on arbitrary bytes. Every input must either parse to a header whose data
// fits the input (and decode), or throw a VLMError; never crash or read out of bounds.
import VLMCore
import VLMShard

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNpy(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let header = try? Npy.parseHeader(bytes, name: "fuzz.npy") else { return 0 }
    precondition(header.count >= 0, "negative element count")
    switch header.dtype {
    case .uint8: _ = try? Npy.decode(bytes, name: "fuzz.npy") as (shape: [Int], values: [UInt8])
    case .int32: _ = try? Npy.decode(bytes, name: "fuzz.npy") as (shape: [Int], values: [Int32])
    case .float32: _ = try? Npy.decode(bytes, name: "fuzz.npy") as (shape: [Int], values: [Float])
    }
    return 0
}

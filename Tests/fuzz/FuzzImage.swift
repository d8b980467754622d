// libFuzzer target: the image header probe ingest runs on every image (ImageProbe: format sniff, header size,
// end marker, decompression-bomb limit; compiled in from Sources/VLMPipeline/Ingest/ImageProbe.swift), the
// ImageHeader reader beneath it, and the JPEG/PNG decoder (libjpeg-turbo, libpng) with a pixel limit that keeps
// each decode small. Every input must be judged or throw a VLMError; a decoded image must have the size its
// header gave and width*height*3 bytes. Never crash, hang or read out of bounds. (libFuzzer calls one input at a
// time, so one decoder serves them all.)
import VLMCore
import VLMIO

nonisolated(unsafe) private let decoder = ImageDecoder(options: DecodeOptions(pixelLimit: 1 << 20))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let probe = ImageProbe.probe(bytes, name: "fuzz.img", expected: size % 2 == 0 ? (width: 16, height: 16) : nil)
    precondition(probe.byteSize == size, "probe counted \(probe.byteSize ?? -1) of \(size) bytes")
    precondition(probe.status == .ok || probe.error != nil, "status \(probe.status) without an error")
    let header = try? ImageHeader.read(bytes, name: "fuzz.img")
    if probe.status == .ok { precondition(header != nil, "probe ok without a header") }
    do {
        let image = try decoder.decode(bytes, name: "fuzz.img")
        precondition(image.width > 0 && image.height > 0 && image.rgb.count == image.width * image.height * 3,
                     "decoded \(image.width)x\(image.height) with \(image.rgb.count) bytes")
    } catch let error as VLMError {
        _ = error.description
    } catch {
        preconditionFailure("an error that is not a VLMError: \(error)")
    }
    return 0
}

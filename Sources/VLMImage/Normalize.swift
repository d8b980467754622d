import VLMCore

/// Per-channel normalization `(x / 255 − mean) / std`, computed as HF's image processors do:
/// rescale in float64 then cast to float32, subtract and divide in float32.
public struct Normalization: Sendable, Hashable, Codable {
    public var mean: [Double]
    public var std: [Double]

    public init(mean: [Double], std: [Double]) {
        self.mean = mean
        self.std = std
    }

    /// OpenAI CLIP (LLaVA's vision tower).
    public static let clip = Normalization(mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711])
    /// SigLIP: 0.5 / 0.5.
    public static let siglip = Normalization(mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
    /// ImageNet (torchvision).
    public static let imagenet = Normalization(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

    public static func preset(_ name: String) -> Normalization? {
        switch name.lowercased() {
        case "clip", "openai": return .clip
        case "siglip": return .siglip
        case "imagenet": return .imagenet
        default: return nil
        }
    }

    /// 256 float32 values per channel: every uint8 maps to one value, so a lookup is exact.
    public var table: [Float] {
        var out = [Float](repeating: 0, count: 3 * 256)
        for c in 0..<3 {
            let m = Float(mean[c]), s = Float(std[c])
            for v in 0..<256 {
                let rescaled = Float(Double(v) * (1.0 / 255.0))
                out[c * 256 + v] = (rescaled - m) / s
            }
        }
        return out
    }

    /// Interleaved RGB bytes (any number of pixels) to float32, same layout.
    public func apply(_ rgb: [UInt8]) -> [Float] {
        let lut = table
        return [Float](unsafeUninitializedCapacity: rgb.count) { out, initialized in
            rgb.withUnsafeBufferPointer { src in
                lut.withUnsafeBufferPointer { t in
                    var i = 0
                    while i < src.count {
                        out[i] = t[Int(src[i])]
                        out[i + 1] = t[256 + Int(src[i + 1])]
                        out[i + 2] = t[512 + Int(src[i + 2])]
                        i += 3
                    }
                }
            }
            initialized = rgb.count
        }
    }
}

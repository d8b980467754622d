import ArgumentParser
import Foundation
import VLMCore
import VLMImage
import VLMIO
import VLMShard

/// Flags that decide the pixels, shared by `preprocess` and `patchify`.
struct ImageOptions: ParsableArguments {
    @Option(name: .long, help: "Tile side S in pixels (the vision tower's input size).")
    var imageSize = 336

    @Option(name: .long, help: "ViT patch side P; S must be divisible by P.")
    var patchSize = 14

    @Option(name: .long, help: "crop (CLIP, LLaVA-1.0), pad (LLaVA-1.5 expand2square), squash (SigLIP) or anyres (LLaVA-NeXT).")
    var mode: ResizeMode = .crop

    @Option(name: .long, help: "Resampling filter: bicubic (PIL's default, what HF uses), bilinear or nearest.")
    var resample: ResampleFilter = .bicubic

    @Option(name: .long, help: "Which resize pass runs first: pillow13 (Pillow >= 13) or horizontal-first (Pillow <= 12.1). The 8-bit rounding between passes makes them differ by a level here and there.")
    var passOrder: ResizePassOrder = .pillow13

    @Flag(name: .long, help: "Decode JPEGs at 1/2, 1/4 or 1/8 scale when the target is that much smaller. Faster; not bit-identical to PIL.")
    var fastDecode = false

    @Flag(name: .long, help: "Rotate/flip by the EXIF orientation first (HF and LLaVA do not).")
    var exifTranspose = false

    @Option(name: .long, help: ArgumentHelp("anyres candidate resolutions, WxH comma-separated (default: LLaVA-NeXT's 1x2,2x1,2x2,3x1,1x3 tiles of S).", valueName: "WxH,..."))
    var gridPinpoints: String?

    func config() throws -> PreprocessConfig {
        var pinpoints: [[Int]]?
        if let gridPinpoints {
            pinpoints = try gridPinpoints.split(separator: ",").map { item in
                let parts = item.lowercased().split(separator: "x").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard parts.count == 2 else { throw ValidationError("--grid-pinpoints: '\(item)' is not WIDTHxHEIGHT") }
                return parts
            }
        }
        let config = PreprocessConfig(imageSize: imageSize, patchSize: patchSize, mode: mode, resample: resample,
                                      passOrder: passOrder, fastDecode: fastDecode, exifTranspose: exifTranspose, gridPinpoints: pinpoints)
        do { try config.validate() } catch let error as VLMError { throw ValidationError(error.message) }
        return config
    }
}

extension ResizeMode: ExpressibleByArgument {}
extension ResampleFilter: ExpressibleByArgument {}
extension ResizePassOrder: ExpressibleByArgument {}

struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Show what the vision encoder will see: decode and preprocess images into .npy (or .png) files.",
        discussion: """
        Each IMAGE becomes OUT/NAME.npy: uint8 [tiles, S, S, 3] (tiles = 1, or 1 + rows*cols for anyres with the global view first); with --patches the ViT layout uint8 [tiles, (S/P)^2, P*P*3]; with --normalize float32. --png writes OUT/NAME.png (OUT/NAME-tileK.png for several tiles) instead. Pixels match PIL + HF CLIPImageProcessor exactly unless --fast-decode is given. These are debug files: each is written to a temporary name and renamed, so none is ever seen half-written, but none is fsynced (a power loss may lose the latest ones; run it again). 
        """
    )

    @Argument(help: "JPEG or PNG files.")
    var images: [String] = []

    @Option(name: .long, help: "Output folder (created if needed).")
    var out: String?

    @OptionGroup var imageOptions: ImageOptions

    @Option(name: .long, help: ArgumentHelp("Normalize to float32: clip, siglip, imagenet, or MEAN,MEAN,MEAN/STD,STD,STD.", valueName: "preset"))
    var normalize: String?

    @Flag(name: .long, help: "Write the ViT patch layout [tiles, patches, P*P*3] instead of [tiles, S, S, 3].")
    var patches = false

    @Flag(name: .long, help: "Write the decoded RGB image [1, H, W, 3] with no resizing (what the modes start from).")
    var decoded = false

    @Flag(name: .long, help: "Write PNG images instead of .npy (uint8 only).")
    var png = false

    @Option(name: .long, help: "Worker threads (default: all cores).")
    var jobs: Int?

    @Flag(name: .long, help: "Print one JSON object per image on stdout.")
    var json = false

    @Option(name: .long, help: .hidden)
    var benchSeconds: Double?

    func validate() throws {
        if images.isEmpty { throw ValidationError("give at least one image file") }
        if benchSeconds == nil, out == nil { throw ValidationError("--out DIR is required") }
        if png, normalize != nil { throw ValidationError("--png writes uint8 pixels; it cannot be combined with --normalize") }
        if png, patches { throw ValidationError("--png writes images; it cannot be combined with --patches") }
        if decoded, patches { throw ValidationError("--decoded writes the image before resizing; it cannot be combined with --patches") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if let normalize, (try? Self.normalization(normalize)) == nil {
            throw ValidationError("--normalize: '\(normalize)' is not clip, siglip, imagenet or MEAN,MEAN,MEAN/STD,STD,STD")
        }
        _ = try imageOptions.config()
    }

    static func normalization(_ text: String) throws -> Normalization {
        if let preset = Normalization.preset(text) { return preset }
        let halves = text.split(separator: "/")
        guard halves.count == 2 else { throw ValidationError("bad normalization") }
        let mean = halves[0].split(separator: ",").compactMap { Double($0) }
        let std = halves[1].split(separator: ",").compactMap { Double($0) }
        guard mean.count == 3, std.count == 3, std.allSatisfy({ $0 > 0 }) else { throw ValidationError("bad normalization") }
        return Normalization(mean: mean, std: std)
    }

    func run() throws {
        let config = try imageOptions.config()
        let jobs = self.jobs ?? ImageWorkers.defaultJobs
        if let benchSeconds {
            try ImageBench.run(files: images, config: config, jobs: jobs, seconds: benchSeconds, normalize: normalize.map { try Self.normalization($0) })
            return
        }
        let out = self.out!
        do { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) } catch {
            throw ValidationError("cannot create --out folder \(out): \(error.localizedDescription)")
        }
        let names = images.map { URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent }
        if Set(names).count != names.count {
            throw ValidationError("two input files have the same name; outputs would overwrite each other")
        }
        let normalization = try normalize.map { try Self.normalization($0) }
        let results = ResultBox<Result<(PreprocessedImage, Written, PixelRect?), any Error>>(count: images.count)
        let workers = (0..<max(1, min(jobs, images.count))).map { _ in Preprocessor(config: config) }
        let box = UncheckedBox(workers)
        let images = self.images, patches = self.patches, png = self.png, decodedOnly = self.decoded
        ImageWorkers.run(count: images.count, jobs: jobs) { index, worker in
            let path = images[index]
            do {
                let pre = box.value[worker]
                let bytes = try ImageFileReader.read(path)
                let result: PreprocessedImage
                if decodedOnly {
                    result = PreprocessedImage(tiles: [try pre.decode(bytes, name: path)], gridRows: 1, gridCols: 1)
                } else {
                    result = try pre.process(bytes, name: path)
                }
                let written = try Self.write(result, name: names[index], out: out, config: config,
                                             normalization: normalization, patches: patches, png: png)
                results.set(index, .success((result, written, pre.lastDecodedRegion)))
            } catch {
                results.set(index, .failure(error))
            }
        }
        var failed = 0
        for (index, result) in results.values.enumerated() {
            switch result {
            case .success(let (image, written, region))?:
                if json {
                    var record: [String: Any] = ["file": images[index], "out": written.paths, "tiles": image.tiles.count,
                                                 "grid": [image.gridRows, image.gridCols], "shape": written.shape, "dtype": written.dtype]
                    if let region { record["decoded_region"] = [region.x, region.y, region.width, region.height] }
                    let data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    print("\(images[index]) -> \(written.paths.joined(separator: ", ")) \(written.shape)")
                }
            case .failure(let error)?:
                failed += 1
                let message = (error as? VLMError)?.description ?? "\(images[index]): \(error)"
                FileHandle.standardError.write(Data("error: \(message)\n".utf8))
                if json {
                    let data = try JSONSerialization.data(withJSONObject: ["file": images[index], "error": message], options: [.sortedKeys, .withoutEscapingSlashes])
                    print(String(decoding: data, as: UTF8.self))
                }
            case nil:
                break
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }

    struct Written {
        var paths: [String]
        var shape: [Int]
        var dtype: String
    }

    /// Writes one image's outputs. They are debug output, cheap to make again: each file is written to a temporary
    /// name and renamed (a reader never sees a partial file) but not fsynced, so a power loss may lose recent ones.
    static func write(_ result: PreprocessedImage, name: String, out: String, config: PreprocessConfig,
                      normalization: Normalization?, patches: Bool, png: Bool) throws -> Written {
        let s = config.imageSize, p = config.patchSize
        let tiles = result.tiles.count
        let (h, w) = (result.tiles[0].height, result.tiles[0].width)
        if png {
            var paths: [String] = []
            for (k, tile) in result.tiles.enumerated() {
                let path = "\(out)/\(name)\(tiles == 1 ? "" : "-tile\(k)").png"
                try AtomicFile.write(encodePNG(tile), to: path, durable: false)
                paths.append(path)
            }
            return Written(paths: paths, shape: [tiles, h, w, 3], dtype: "uint8")
        }
        var pixels = result.stacked
        var shape = [tiles, h, w, 3]
        if patches {
            pixels = Patchify.patchify(pixels, tiles: tiles, size: s, patch: p)
            shape = config.patchGrid.withTiles(tiles).shape
        }
        let path = "\(out)/\(name).npy"
        if let normalization {
            let floats = normalization.apply(pixels)
            try AtomicFile.withWriter(to: path, durable: false) { file in
                try file.write(Npy.header(dtype: .float32, shape: shape))
                try floats.withUnsafeBytes { try file.write($0) }
            }
            return Written(paths: [path], shape: shape, dtype: "float32")
        }
        try AtomicFile.withWriter(to: path, durable: false) { file in
            try file.write(Npy.header(dtype: .uint8, shape: shape))
            try file.write(pixels)
        }
        return Written(paths: [path], shape: shape, dtype: "uint8")
    }
}

/// Results filled in by worker threads, one slot each.
final class ResultBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [T?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: T) { lock.withLock { values[index] = value } }
}

/// Hands per-worker objects (each used by one thread only) to worker closures.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// PNG bytes of a tile (libpng through VLMIO's ImageEncode).
func encodePNG(_ tile: PixelBuffer) throws -> [UInt8] {
    try ImageEncode.png(rgb: tile.pixels, width: tile.width, height: tile.height)
}

/// In-process throughput of decode and of the whole pipeline (hidden `preprocess --bench-seconds`), so that
/// the benchmark measures no process start-up. Prints one JSON object.
enum ImageBench {
    /// CPU time of the whole process (all threads), in seconds.
    static func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func run(files: [String], config: PreprocessConfig, jobs: Int, seconds: Double, normalize: Normalization?) throws {
        let blobs = try files.map { try ImageFileReader.read($0) }
        let shared = UncheckedBox(blobs)
        /// (images per wall-clock second, images per CPU second of the process): the second stays meaningful on a
        /// loaded machine, where other processes take cores away.
        func measure(_ work: @escaping @Sendable (Preprocessor, ImageDecoder, [UInt8], String) throws -> Void) -> (Double, Double) {
            let done = ImageWorkers.Counter()
            let deadline = Date().addingTimeInterval(seconds)
            let start = Date()
            let cpuStart = cpuSeconds()
            DispatchQueue.concurrentPerform(iterations: jobs) { worker in
                let pre = Preprocessor(config: config)
                let decoder = ImageDecoder(options: config.decodeOptions())
                var i = worker
                while Date() < deadline {
                    let bytes = shared.value[i % shared.value.count]
                    try? work(pre, decoder, bytes, files[i % files.count])
                    _ = done.next()
                    i += jobs
                }
            }
            return (Double(done.peek) / Date().timeIntervalSince(start), Double(done.peek) / max(cpuSeconds() - cpuStart, 1e-9))
        }
        let decode = measure { pre, _, bytes, name in _ = try pre.decode(bytes, name: name) }
        let pipeline = measure { pre, _, bytes, name in
            let result = try pre.process(bytes, name: name)
            let patches = Patchify.patchify(result.stacked, tiles: result.tiles.count, size: config.imageSize, patch: config.patchSize)
            if let normalize { _ = normalize.apply(patches) }
        }
        let record: [String: Any] = ["jobs": jobs, "images": files.count, "seconds": seconds, "mode": config.mode.rawValue,
                                     "fast_decode": config.fastDecode, "decode_per_s": decode.0, "pipeline_per_s": pipeline.0,
                                     "decode_per_cpu_s": decode.1, "pipeline_per_cpu_s": pipeline.1]
        let data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

import Foundation
import VLMIO

/// The shard writer's output: VLMIO's `HashingFileWriter`, which hashes the shard as it is assembled and writes it
/// with direct I/O, reading pixel content from the pixel shard straight into its buffers.
///
/// ```swift
/// let out = try ShardOutput(path: tmp)
/// let tar = TarWriter(output: out)
/// try tar.add(name: "k.pixels.npy", size: n) { _ in try out.copy(from: pixelFD, at: offset, count: n) }
/// try tar.finish()
/// let (sha256, bytes) = try out.finish()
/// ```
public typealias ShardOutput = HashingFileWriter

extension HashingFileWriter: TarOutput {}

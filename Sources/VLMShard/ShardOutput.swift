import Foundation
import VLMIO

/// The shard writer's output: VLMIO's `FileWriter`, which buffers appends and copies pixel content from the pixel
/// shard with `copy_file_range`.
///
/// ```swift
/// let out = try ShardOutput(path: tmp)
/// let tar = TarWriter(output: out)
/// try tar.add(name: "k.pixels.npy", size: n) { _ in try out.copy(from: pixelFD, at: offset, count: n) }
/// ```
public typealias ShardOutput = FileWriter

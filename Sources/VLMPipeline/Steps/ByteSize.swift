import Foundation

/// Byte sizes as users write them: `256MB` is 256,000,000; `1GiB` is 2^30; a plain number is bytes.
public enum ByteSize {
    /// The size `text` names, or nil when it is not a positive size.
    public static func parse(_ text: String) -> Int? {
        let units: [(String, Double)] = [
            ("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TIB", 1_099_511_627_776),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("B", 1),
        ]
        let upper = text.trimmingCharacters(in: .whitespaces).uppercased()
        for (suffix, factor) in units where upper.hasSuffix(suffix) {
            guard let value = Double(upper.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), value > 0 else { break }
            return Int(value * factor)
        }
        guard let value = Int(upper), value > 0 else { return nil }
        return value
    }
}

import Foundation

/// A blocking FIFO of at most `capacity` items between one producer thread and one consumer: the producer waits
/// when it is full (this is what bounds the prefetch memory), the consumer when it is empty.
final class BoundedQueue<Element>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element?]
    private var head = 0
    private var count = 0
    private var closed = false

    init(capacity: Int) {
        items = Array(repeating: nil, count: max(1, capacity))
    }

    /// Appends `item`, waiting for room; returns false (dropping it) once the queue is closed.
    @discardableResult
    func push(_ item: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while count == items.count && !closed { condition.wait() }
        if closed { return false }
        appendLocked(item)
        return true
    }

    /// The next item, waiting for one; nil once the queue is closed and empty.
    func pop() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while count == 0 && !closed { condition.wait() }
        if count == 0 { return nil }
        return removeFirstLocked()
    }

    /// Appends `item` when there is room and the queue is open; never waits.
    @discardableResult
    func tryPush(_ item: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard count < items.count && !closed else { return false }
        appendLocked(item)
        return true
    }

    /// The next item if one is there; never waits.
    func tryPop() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        guard count > 0 else { return nil }
        return removeFirstLocked()
    }

    /// Appends `item` and wakes the other side; the lock is held and there is room.
    private func appendLocked(_ item: Element) {
        items[(head + count) % items.count] = item
        count += 1
        condition.broadcast()
    }

    /// Removes the first item and wakes the other side; the lock is held and the queue is not empty.
    private func removeFirstLocked() -> Element? {
        let item = items[head]
        items[head] = nil
        head = (head + 1) % items.count
        count -= 1
        condition.broadcast()
        return item
    }

    /// Wakes everyone; later pushes are dropped, pops drain what is left then return nil.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closed
    }
}

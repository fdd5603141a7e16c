import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`, for the test harness's servers and tools.
///
/// Not Foundation's `Process`: on Linux its exit monitoring and its pipes' readability
/// handlers are libdispatch sources, and tearing those down as children exit, with
/// several tests starting and stopping processes at once, intermittently crashed the
/// test process in `_dispatch_event_loop_drain` (see swift-corelibs-foundation PR
/// #5507). Here a thread of its own waits for the exit (`waitpid`) and, when output is
/// captured, another reads the pipe: plain blocking calls, no dispatch sources.
///
/// The child gets an empty signal mask and default handlers (a process spawned from a
/// NIO or Swift concurrency thread would otherwise inherit blocked signals) and none of
/// the test process's file descriptors. Its standard output and error go to
/// `outputPath` (created, truncated), to `onOutput`, or to `/dev/null`.
///
/// Concurrency: thread-safe.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    /// What the waiter thread records, shared with it.
    private final class ExitState: Sendable {
        /// The raw `waitpid` status, once the child has exited.
        let status = Mutex<Int32?>(nil)
        /// Signalled when `status` is set (and again by each waiter, for the next).
        let exited = DispatchSemaphore(value: 0)
    }
    private let exitState = ExitState()

    /// Starts `executable` with `arguments`.
    ///
    /// - Parameters:
    ///   - environment: the child's environment; the test process's when nil.
    ///   - outputPath: a file for the child's standard output (and error, without
    ///     `errorPath`).
    ///   - errorPath: a file for the child's standard error.
    ///   - inputPath: a file for the child's standard input (`/dev/null` when nil).
    ///   - onOutput: called (on a thread of its own) with each piece of the child's
    ///     output, then with an empty array at its end; ignored when `outputPath` is set.
    ///   - onExit: called (on a thread of its own) with the exit code once the child
    ///     has exited (see `wait()`).
    /// - Throws: `TestSetupError` naming the executable and the error.
    public init(
        executable: String, arguments: [String], environment: [String: String]? = nil, outputPath: String? = nil,
        errorPath: String? = nil, inputPath: String? = nil,
        onOutput: (@Sendable ([UInt8]) -> Void)? = nil, onExit: (@Sendable (Int32) -> Void)? = nil
    ) throws {
        guard let closeFrom = Self.addCloseFrom else {
            throw TestSetupError(description: "posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later)")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath ?? "/dev/null", O_RDONLY, 0)
        var pipeEnds: [Int32] = [-1, -1]
        if let outputPath {
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else if onOutput != nil {
            guard pipe(&pipeEnds) == 0 else {
                throw TestSetupError(description: "pipe failed: \(String(cString: strerror(errno)))")
            }
            // Close-on-exec (pipe2 is not exported), so other children do not inherit them.
            for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        if let errorPath {
            posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        // Nothing else of the test process: an inherited socket would keep its port
        // bound in the child after the test closed it.
        _ = closeFrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let environmentStrings = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp = environmentStrings.map { strdup($0) } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        if pipeEnds[1] >= 0 { close(pipeEnds[1]) }
        guard result == 0 else {
            if pipeEnds[0] >= 0 { close(pipeEnds[0]) }
            throw TestSetupError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = pid

        if let onOutput, outputPath == nil {
            let readEnd = pipeEnds[0]
            Thread.detachNewThread {
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = read(readEnd, &buffer, buffer.count)
                    if count > 0 {
                        onOutput(Array(buffer[0..<count]))
                    } else if count < 0 && errno == EINTR {
                        continue
                    } else {
                        break
                    }
                }
                close(readEnd)
                onOutput([])
            }
        }
        let exitState = self.exitState
        let child = pid
        Thread.detachNewThread {
            var raw: Int32 = 0
            while waitpid(child, &raw, 0) == -1 && errno == EINTR {}
            exitState.status.withLock { $0 = raw }
            exitState.exited.signal()
            onExit?(Self.exitCode(raw))
        }
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which the
    /// Glibc module does not export (it is behind `_GNU_SOURCE`).
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            return nil
        }
        return unsafeBitCast(
            symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// Whether the child has not exited yet.
    public var isRunning: Bool { exitState.status.withLock { $0 == nil } }

    /// Sends `signal` to the child (nothing once it has exited).
    public func signal(_ signal: Int32) {
        exitState.status.withLock { status in
            // Not once the exit is recorded (the PID may be reused then; between the
            // reaping and the recording is a window of microseconds).
            if status == nil { _ = Glibc.kill(pid, signal) }
        }
    }

    /// Waits for the child to exit and returns its exit code (128 + the signal when a
    /// signal ended it). Blocks the calling thread.
    @discardableResult
    public func wait() -> Int32 {
        if let raw = exitState.status.withLock({ $0 }) { return Self.exitCode(raw) }
        exitState.exited.wait()
        exitState.exited.signal()  // for the next caller
        return Self.exitCode(exitState.status.withLock { $0 } ?? 0)
    }

    /// Waits at most `timeout` for the child to exit; its exit code, or nil when it is
    /// still running. Blocks the calling thread.
    public func wait(timeout: Duration) -> Int32? {
        if let raw = exitState.status.withLock({ $0 }) { return Self.exitCode(raw) }
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        guard exitState.exited.wait(timeout: .now() + .nanoseconds(Int(nanoseconds))) == .success else { return nil }
        exitState.exited.signal()
        return Self.exitCode(exitState.status.withLock { $0 } ?? 0)
    }

    /// What a program run to its end printed, and how it ended.
    public struct Run: Sendable {
        /// The exit code (128 + the signal when a signal ended it).
        public var status: Int32
        public var output: String
        public var error: String
    }

    /// Runs `executable` to its end, `input` on its standard input, and returns its exit
    /// code and output. Blocks the calling thread: for short tools.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: String? = nil
    ) throws -> Run {
        let files = try RunFiles(input: input)
        defer { files.remove() }
        let child = try ChildProcess(
            executable: executable, arguments: arguments, environment: environment, outputPath: files.output,
            errorPath: files.error, inputPath: files.input)
        return files.run(status: child.wait())
    }

    /// `run(_:_:environment:input:)` for async callers: waits without blocking a thread
    /// of the concurrency pool.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: String? = nil
    ) async throws -> Run {
        let files = try RunFiles(input: input)
        defer { files.remove() }
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            do {
                _ = try ChildProcess(
                    executable: executable, arguments: arguments, environment: environment, outputPath: files.output,
                    errorPath: files.error, inputPath: files.input, onExit: { continuation.resume(returning: $0) })
            } catch {
                continuation.resume(throwing: error)
            }
        }
        return files.run(status: status)
    }

    /// The temporary files of a `run`: standard input, output and error.
    private struct RunFiles {
        let input: String?
        let output: String
        let error: String

        init(input text: String?) throws {
            let base = FileManager.default.temporaryDirectory
                .appendingPathComponent("weir-child-\(UInt64.random(in: 0...UInt64.max))").path
            output = base + ".out"
            error = base + ".err"
            if let text {
                input = base + ".in"
                guard FileManager.default.createFile(atPath: base + ".in", contents: Data(text.utf8)) else {
                    throw TestSetupError(description: "cannot create \(base).in")
                }
            } else {
                input = nil
            }
        }

        func run(status: Int32) -> Run {
            Run(
                status: status, output: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "",
                error: (try? String(contentsOfFile: error, encoding: .utf8)) ?? "")
        }

        func remove() {
            for path in [input, output, error].compactMap({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    private static func exitCode(_ raw: Int32) -> Int32 {
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }
}

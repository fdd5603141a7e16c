import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn` and reaped with `waitpid`, for the test
/// harness's servers and tools.
///
/// Not Foundation's `Process`: on Linux its exit monitoring and pipes go through
/// libdispatch sources, and tearing those down as children exit, with several tests
/// starting and stopping processes at once, intermittently crashed the test process
/// in `_dispatch_event_loop_drain` (see swift-corelibs-foundation PR #5507).
///
/// The child gets an empty signal mask and default handlers (a process spawned from a
/// NIO or Swift concurrency thread would otherwise inherit blocked signals), none of the
/// test process's file descriptors, and its standard output and error go to
/// `outputPath` (created, truncated), or to `/dev/null`.
///
/// Concurrency: not thread-safe; one owner starts, signals and waits.
final class ChildProcess {
    let pid: pid_t
    private var status: Int32?

    /// Starts `executable` with `arguments`.
    ///
    /// - Throws: `TestSetupError` naming the executable and the `posix_spawn` error.
    init(executable: String, arguments: [String], outputPath: String? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let output = outputPath ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        // Nothing else of the test process: an inherited socket would keep its port
        // bound in the child after the test closed it.
        guard let closeFrom = Self.addCloseFrom else {
            throw TestSetupError(description: "posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later)")
        }
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
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw TestSetupError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = pid
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

    /// Whether the child has not exited yet (reaps it if it has).
    var isRunning: Bool {
        guard status == nil else { return false }
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, WNOHANG)
        if result == pid { status = raw }
        return result == 0
    }

    /// Sends `signal` to the child (nothing once it has been reaped).
    func signal(_ signal: Int32) {
        guard status == nil else { return }
        _ = Glibc.kill(pid, signal)
    }

    /// Waits for the child to exit and returns its exit code (128 + the signal when a
    /// signal ended it).
    @discardableResult
    func wait() -> Int32 {
        if status == nil {
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) == -1 && errno == EINTR {}
            status = raw
        }
        let raw = status!
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }
}

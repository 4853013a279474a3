import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilders;

/**
 * A throwaway Neo4j for InfiniteScribe's tests: Bolt only, loopback only, no auth.
 *
 * <p>Usage: {@code java -cp ... ScribeNeo4j WORKDIR PORT} (PORT 0 lets the OS choose).
 * Prints {@code SCRIBE_NEO4J_READY bolt://127.0.0.1:PORT} on stdout once Bolt accepts
 * connections, then runs until SIGTERM/SIGINT or until stdin is closed, so the server dies
 * with the test process that started it even when that process is killed.
 */
public final class ScribeNeo4j {
    static final String READY = "SCRIBE_NEO4J_READY";

    private ScribeNeo4j() {}

    /** Starts Neo4j, announces readiness and waits for a shutdown request. */
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: ScribeNeo4j WORKDIR PORT");
            System.exit(2);
        }
        Path workdir = Path.of(args[0]).toAbsolutePath();
        int port = Integer.parseInt(args[1]);

        Neo4j neo4j = Neo4jBuilders.newInProcessBuilder(workdir)
                .withDisabledServer()
                .withConfig(BoltConnector.enabled, true)
                .withConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .withConfig(BoltConnector.advertised_address, new SocketAddress("127.0.0.1", port))
                .withConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                .withConfig(GraphDatabaseSettings.auth_enabled, false)
                .withConfig(GraphDatabaseSettings.pagecache_memory, 64L * 1024 * 1024)
                .withConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                // Netty's default graceful shutdown waits ~10 s for a quiet Bolt; a throwaway
                // test server has nothing to drain.
                .withConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .withConfig(
                        GraphDatabaseInternalSettings.netty_server_shutdown_timeout,
                        Duration.ofSeconds(2))
                // Tests run without network beyond loopback: never phone home.
                .withConfig(GraphDatabaseSettings.udc_enabled, false)
                .withConfig(GraphDatabaseInternalSettings.udc_network_enabled, false)
                .build();

        // SIGTERM, SIGINT and System.exit all run this, so the store is closed cleanly.
        Runtime.getRuntime().addShutdownHook(new Thread(neo4j::close, "scribe-neo4j-shutdown"));

        URI bolt = neo4j.boltURI();
        awaitBolt(bolt.getHost(), bolt.getPort());
        System.out.println(READY + " bolt://" + bolt.getHost() + ":" + bolt.getPort());
        System.out.flush();

        // EOF on stdin means the parent is gone or wants us to stop.
        InputStream in = System.in;
        byte[] buffer = new byte[256];
        try {
            while (in.read(buffer) >= 0) {
                // Input is ignored; only its end matters.
            }
        } catch (IOException ignored) {
            // A broken stdin is as good as a closed one.
        }
        System.exit(0);
    }

    private static void awaitBolt(String host, int port) throws InterruptedException {
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (true) {
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress(host, port), 1000);
                return;
            } catch (IOException notYet) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("Bolt did not accept connections on " + port);
                }
                Thread.sleep(50);
            }
        }
    }
}

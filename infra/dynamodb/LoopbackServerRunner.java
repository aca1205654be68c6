// Starts DynamoDB Local bound to a single host address (default 127.0.0.1).
//
// DynamoDB Local's own ServerRunner has no bind-address option: it builds a
// Jetty Server(port), which listens on 0.0.0.0. This launcher builds the
// server exactly the way ServerRunner does (same command-line options), then
// sets the host of each Jetty connector before starting it.
//
// Bind host: system property proctor.bindHost (default 127.0.0.1).
// Compiled once by infra/stack install against the DynamoDB Local jars.
import com.amazonaws.services.dynamodbv2.local.main.ServerRunner;
import com.amazonaws.services.dynamodbv2.local.server.DynamoDBProxyServer;
import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public final class LoopbackServerRunner {
    private LoopbackServerRunner() {}

    public static void main(String[] args) throws Exception {
        String host = System.getProperty("proctor.bindHost", "127.0.0.1");
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field f = DynamoDBProxyServer.class.getDeclaredField("server");
        f.setAccessible(true);
        Server jetty = (Server) f.get(proxy);
        int bound = 0;
        for (Connector c : jetty.getConnectors()) {
            if (c instanceof ServerConnector) {
                ((ServerConnector) c).setHost(host);
                bound++;
            }
        }
        if (bound == 0) {
            throw new IllegalStateException("no Jetty ServerConnector found; cannot restrict bind address");
        }
        proxy.start();
        System.out.println("LoopbackServerRunner: DynamoDB Local listening on " + host);
        proxy.join();
    }
}
